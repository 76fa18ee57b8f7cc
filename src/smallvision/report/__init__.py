"""Reports: plots now; the ladder table and HTML report build on these."""
