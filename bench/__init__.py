"""Benchmarks of SPEC section 10: `python -m bench` and `python -m bench.scale`."""
