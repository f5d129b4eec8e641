"""CloudEvents ingestion: validation, signatures, dedup and reconciliation counters."""
