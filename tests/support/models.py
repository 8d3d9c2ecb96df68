"""Test models: call counters, settable latency, failures and hangs, deterministic prices per pair."""

from __future__ import annotations

import asyncio
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable


def price_of(pair: str) -> float:
    """A distinct, repeatable price per pair, so a test can tell which pair a body belongs to."""
    return round(100 + zlib.crc32(pair.encode()) % 100_000 / 7, 4)


class ModelSickError(RuntimeError):
    """What a test model raises when `fail` is True."""


class _TestModel:
    """What both test models share: the knobs a test sets and the counters it reads.

    - `latency_s`: how long each call takes.
    - `fail`: True raises `ModelSickError`; an exception instance is raised as it is.
    - `result`: a fixed answer for every pair (e.g. `float("nan")`); None means `prices(pair)`.
    - `prices`: pair -> price, `price_of` by default.
    - `calls`: calls per pair, counted when a call starts (so a hanging call counts).
    """

    def __init__(
        self, *, version: str = "test", latency_s: float = 0.0, pairs: frozenset[str] | None = None
    ) -> None:
        self.version = version
        self.latency_s = latency_s
        self.pairs = pairs
        self.fail: bool | Exception = False
        self.result: float | None = None
        self.prices: Callable[[str], float] = price_of
        self.calls: Counter[str] = Counter()

    @property
    def total_calls(self) -> int:
        return sum(self.calls.values())

    def value(self, pair: str) -> float:
        """The prediction a successful call for `pair` returns right now."""
        return self.prices(pair) if self.result is None else self.result

    def _answer(self, pair: str) -> float:
        if isinstance(self.fail, Exception):
            raise self.fail
        if self.fail:
            raise ModelSickError(f"the model is sick (asked for {pair})")
        return self.value(pair)


class CountingModel(_TestModel):
    """An async model. `hang = True` makes calls wait until cancelled; `active` counts calls in progress."""

    def __init__(
        self, *, version: str = "test", latency_s: float = 0.0, pairs: frozenset[str] | None = None
    ) -> None:
        super().__init__(version=version, latency_s=latency_s, pairs=pairs)
        self.hang = False
        self.active = 0
        self.max_active = 0
        self.cancelled = 0

    async def predict(self, pair: str) -> float:
        self.calls[pair] += 1
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            if self.hang:
                await asyncio.Event().wait()
            await asyncio.sleep(self.latency_s)
            return self._answer(pair)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.active -= 1


class SyncCpuModel(_TestModel):
    """A synchronous model that holds its thread for `latency_s`, burning CPU like a real model.

    `burn_cpu = False` sleeps instead, for tests that need the thread busy but not the GIL contended.
    """

    def __init__(
        self, *, version: str = "test", latency_s: float = 0.0, pairs: frozenset[str] | None = None
    ) -> None:
        super().__init__(version=version, latency_s=latency_s, pairs=pairs)
        self.burn_cpu = True
        # The service runs sync models in a thread pool: several calls may count at once.
        self._lock = threading.Lock()

    def predict(self, pair: str) -> float:
        with self._lock:
            self.calls[pair] += 1
        if self.burn_cpu:
            deadline = time.perf_counter() + self.latency_s
            while time.perf_counter() < deadline:
                sum(range(1000))  # Python bytecode: the GIL is released every switch interval
        else:
            time.sleep(self.latency_s)
        return self._answer(pair)


def hung_sync_model() -> SyncCpuModel:
    """A zero-argument factory for `--model`: a synchronous model stuck in its thread for 60 s."""
    model = SyncCpuModel(version="hung-sync", latency_s=60.0)
    model.burn_cpu = False
    return model
