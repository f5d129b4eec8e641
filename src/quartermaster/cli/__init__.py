"""The `qm` command line (Typer + Rich)."""
