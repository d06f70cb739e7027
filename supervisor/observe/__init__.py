"""Watching the daemon from outside: counters, the HTTP listener, metrics, the page, `top`."""
