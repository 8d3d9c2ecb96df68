"""Test models: call counters, settable latency, failures and hangs, deterministic prices per pair."""

from __future__ import annotations

import asyncio
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable

from pydantic import BaseModel, ConfigDict, Field

from service.errors import UnknownInput
from service.models.pair import Pair


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


class Quote(BaseModel):
    """The typed test model's input: a pair and a horizon, as the forecaster's."""

    model_config = ConfigDict(extra="forbid")

    pair: Pair
    horizon_minutes: int = Field(5, ge=1, le=60)


class Band(BaseModel):
    """The typed test model's output: structured, with a nested list."""

    pair: str
    horizon_minutes: int
    price: float
    band: list[float]


class TypedModel:
    """An async model on the typed contract, counting calls per (pair, horizon).

    `unknown` pairs are refused from `predict` (UnknownInput); `output` replaces the answer (an invalid
    output, say); `refuse_in_check` moves the refusal to the `check` hook.
    """

    Input = Quote
    Output = Band

    def __init__(self, *, version: str = "typed-test", latency_s: float = 0.0) -> None:
        self.version = version
        self.latency_s = latency_s
        self.unknown: frozenset[str] = frozenset({"NOPE-USD"})
        self.output: object | None = None
        self.calls: Counter[tuple[str, int]] = Counter()

    @property
    def total_calls(self) -> int:
        return sum(self.calls.values())

    async def predict(self, query: Quote) -> Band | object:
        self.calls[(query.pair, query.horizon_minutes)] += 1
        if query.pair in self.unknown:
            raise UnknownInput(f"no prices for {query.pair}")
        await asyncio.sleep(self.latency_s)
        if self.output is not None:
            return self.output
        price = price_of(query.pair) * (1 + query.horizon_minutes / 1000)
        return Band(
            pair=query.pair,
            horizon_minutes=query.horizon_minutes,
            price=price,
            band=[price * 0.99, price * 1.01],
        )


class BatchTypedModel(TypedModel):
    """The typed test model with `predict_batch`: each call's size is recorded in `batches`; a
    batch holding a pair in `poison` fails as a whole, with every pair of the batch in the exception's
    text (as a careless model's message would); a pair in `broken` fails alone, returned as an
    exception in the results."""

    def __init__(self, *, version: str = "batch-test", latency_s: float = 0.0) -> None:
        super().__init__(version=version, latency_s=latency_s)
        self.batches: list[int] = []
        self.poison: frozenset[str] = frozenset()
        self.broken: frozenset[str] = frozenset()

    async def predict_batch(self, queries: list[Quote]) -> list[Band | object]:
        self.batches.append(len(queries))
        await asyncio.sleep(self.latency_s)
        pairs = [query.pair for query in queries]
        if self.poison.intersection(pairs):
            raise ModelSickError(f"poison key in batch of {len(pairs)}: {' '.join(pairs)}")
        self.latency_s, latency = 0.0, self.latency_s  # the items' own calls must not sleep again
        try:
            return [await self._one(query) for query in queries]
        finally:
            self.latency_s = latency

    async def _one(self, query: Quote) -> Band | object:
        if query.pair in self.broken:
            return ModelSickError(f"cannot predict {query.pair}")
        try:
            return await self.predict(query)
        except UnknownInput as exc:
            return exc  # the batch contract: an exception in the results fails that input alone
