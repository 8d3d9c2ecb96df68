"""Models for the benchmarks, loaded by the service with `--model benchmarks.models:NAME`.

BenchModel (stampede): any pair, BENCH_MODEL_LATENCY_SECONDS (default 1) per call. KeyModel and
BatchedKeyModel (miss path): typed, any integer key, 20 ms + 0.5 ms per item, without and with
`predict_batch`. SizedModel (memory): any integer key, at once, a body of BENCH_PREDICTION_BYTES.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict


class BenchModel:
    """Predicts 100.0 for every well-formed pair after sleeping for its latency."""

    version = "bench-1"

    def __init__(self) -> None:
        self.latency_s = float(os.environ.get("BENCH_MODEL_LATENCY_SECONDS", "1.0"))

    async def predict(self, pair: str) -> float:
        await asyncio.sleep(self.latency_s)
        return 100.0


# The miss-path benchmark's models (benchmarks/misspath.py): typed, any integer key, no CPU. One call
# costs CALL_MS plus ITEM_MS per item, so a single predict costs what a batch of one does.
CALL_MS = 20.0
ITEM_MS = 0.5


class Key(BaseModel):
    """The input: `{"key": 17}`."""

    model_config = ConfigDict(extra="forbid")
    key: int


class KeyPrediction(BaseModel):
    """The output: the key back, and a value derived from it."""

    key: int
    value: float
    model_version: str


class KeyModel:
    """One prediction per call: `predict` sleeps CALL_MS + ITEM_MS (20.5 ms)."""

    version = "bench-key-1"
    Input = Key
    Output = KeyPrediction

    async def predict(self, query: Key) -> KeyPrediction:
        await asyncio.sleep((CALL_MS + ITEM_MS) / 1000)
        return self._answer(query)

    def _answer(self, query: Key) -> KeyPrediction:
        return KeyPrediction(key=query.key, value=query.key * 0.5, model_version=self.version)


class BatchedKeyModel(KeyModel):
    """KeyModel with `predict_batch`: CALL_MS + ITEM_MS per item for the whole batch (36 ms for 32)."""

    version = "bench-key-batched-1"

    async def predict_batch(self, queries: Sequence[Key]) -> list[KeyPrediction]:
        await asyncio.sleep((CALL_MS + ITEM_MS * len(queries)) / 1000)
        return [self._answer(query) for query in queries]


class SizedPrediction(BaseModel):
    """The output of SizedModel: the key back and a label that pads the body to its size."""

    key: int
    label: str


class SizedModel:
    """The memory benchmark's model: any integer key, at once, a body of BENCH_PREDICTION_BYTES
    (default 150) bytes, distinct per key: `{"key":17,"label":"xx...x"}`."""

    version = "bench-sized-1"
    Input = Key
    Output = SizedPrediction

    def __init__(self) -> None:
        self.prediction_bytes = int(os.environ.get("BENCH_PREDICTION_BYTES", "150"))

    async def predict(self, query: Key) -> SizedPrediction:
        # len('{"key":,"label":""}') is 19.
        padding = max(0, self.prediction_bytes - 19 - len(str(query.key)))
        return SizedPrediction(key=query.key, label="x" * padding)
