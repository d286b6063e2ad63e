"""Data validation of the DMP migration: Great Expectations suites, Data Docs and compliance reports."""
