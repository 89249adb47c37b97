"""Benchmarks: speed, size and accuracy figures, printed as tables (``make bench``)."""
