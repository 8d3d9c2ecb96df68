"""Benchmarks side by side: `python -m benchmarks.run` writes benchmarks/results/bench.{md,json}."""
