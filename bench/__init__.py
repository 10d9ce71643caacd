"""Citadel benchmarks: ``python -m bench`` (``make bench``) runs them all; see RESULTS.md."""
