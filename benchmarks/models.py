"""A model for the stampede benchmark: any pair (the demo has only 18), a fixed latency, no CPU.

`--model benchmarks.models:BenchModel`; BENCH_MODEL_LATENCY_SECONDS sets the latency (default 1).
"""

from __future__ import annotations

import asyncio
import os


class BenchModel:
    """Predicts 100.0 for every well-formed pair after sleeping for its latency."""

    version = "bench-1"

    def __init__(self) -> None:
        self.latency_s = float(os.environ.get("BENCH_MODEL_LATENCY_SECONDS", "1.0"))

    async def predict(self, pair: str) -> float:
        await asyncio.sleep(self.latency_s)
        return 100.0
