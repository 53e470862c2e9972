"""Benchmarks: ``python bench/pages.py`` (``make bench``); see BENCHMARKS.md."""
