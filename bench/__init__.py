"""Benchmarks of Warrant: each figure is a ratio against a baseline measured in the same run.

`python -m bench` (or `make bench`) runs them; `python -m bench --help` lists the options.
"""
