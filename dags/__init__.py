"""The DAG files: wiring only (see docs/ARCHITECTURE.md)."""
