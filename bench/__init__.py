"""Benchmarks of the daemon against the plain-Python limit of the same work (`python bench/run.py`)."""
