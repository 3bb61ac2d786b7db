"""Benchmarks: ``python -m bench [name]`` runs one or all; each writes bench/results/<name>.json."""
