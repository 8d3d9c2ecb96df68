"""Test models: call counters, settable latency, failures and hangs, deterministic prices per pair."""

from __future__ import annotations

import asyncio
import time
import zlib
from collections import Counter


def price_of(pair: str) -> float:
    """A distinct, repeatable price per pair, so a test can tell which pair a body belongs to."""
    return round(100 + zlib.crc32(pair.encode()) % 100_000 / 7, 4)


class CountingModel:
    """An async model whose behaviour a test sets: `latency_s`, `fail`, `hang`, `result`."""

    def __init__(
        self, *, version: str = "test", latency_s: float = 0.0, pairs: frozenset[str] | None = None
    ) -> None:
        self.version = version
        self.latency_s = latency_s
        self.pairs = pairs
        self.fail = False
        self.hang = False
        self.result: float | None = None  # overrides the price, e.g. float("nan")
        self.calls: Counter[str] = Counter()

    @property
    def total_calls(self) -> int:
        return sum(self.calls.values())

    def value(self, pair: str) -> float:
        return price_of(pair) if self.result is None else self.result

    async def predict(self, pair: str) -> float:
        self.calls[pair] += 1
        if self.hang:
            await asyncio.Event().wait()
        await asyncio.sleep(self.latency_s)
        if self.fail:
            raise RuntimeError("the model is sick")
        return self.value(pair)


class SyncCpuModel(CountingModel):
    """A synchronous model that holds its thread for `latency_s`, like a CPU-bound model."""

    def predict(self, pair: str) -> float:  # type: ignore[override]
        self.calls[pair] += 1
        deadline = time.perf_counter() + self.latency_s
        while time.perf_counter() < deadline:
            sum(range(1000))  # burn CPU, holding the GIL in short slices as real models do
        if self.fail:
            raise RuntimeError("the model is sick")
        return self.value(pair)
