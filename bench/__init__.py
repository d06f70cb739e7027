"""Benchmarks: the daemon against the plain-Python limit of the same work (`bench/run.py`)."""
