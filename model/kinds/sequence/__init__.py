"""The sequence kind: sliding windows over multivariate time series (sensor streams)."""
