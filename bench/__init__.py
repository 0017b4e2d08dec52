"""Benchmarks: ``./dev bench`` (or ``python -m bench``) prints a table."""
