"""Apps, their signing keys, resources and resource leases (the catalog issue extends this)."""
