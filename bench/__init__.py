"""Benchmarks: the helper against a naive py-spiffe script, and against its targets.

`python -m bench` (or `--quick`, `--json`); see bench/README.md.
"""
