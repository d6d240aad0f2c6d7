"""Benchmarks (``python -m bench.<name>``): each prints a table and, last, one JSON line of headline figures."""
