"""The console: the command line, the demo, `advance`, the in-process DAG runner and approval responder, benchmarks and synthetic data."""
