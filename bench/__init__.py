"""Benchmarks (issue 6): `python -m bench.run` or `make bench`. Not part of the package."""
