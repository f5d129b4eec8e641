"""The event log seam: idempotent append, and reading through durable consumer cursors."""
