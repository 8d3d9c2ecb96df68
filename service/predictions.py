"""The one place that combines the cache, single-flight and the model into an answer for a pair."""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass

from service.cache import CacheBackend, Miss
from service.entry import CachedPrediction
from service.errors import PredcacheError, UnknownPair
from service.metrics import Metrics
from service.model import ModelRunner
from service.singleflight import SingleFlight


class Outcome(enum.Enum):
    HIT = "HIT"
    MISS = "MISS"


@dataclass(frozen=True, slots=True)
class Answer:
    """A prediction and how it was obtained, for the response headers."""

    entry: CachedPrediction
    outcome: Outcome
    ttl_left_s: float  # how much longer the prediction is served from cache
    collapsed: bool = False  # this request joined a model call another request started
    stored: bool = False  # the model's prediction was written to the cache


class Predictions:
    """Answers `get(pair)` from the cache when it can, else from one model call per key at a time."""

    def __init__(
        self,
        *,
        runner: ModelRunner,
        cache: CacheBackend | None,
        metrics: Metrics,
        ttl_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.runner = runner
        self.cache = cache
        self.ttl_s = ttl_s
        self._metrics = metrics
        self._clock = clock
        # The key prefix carries the model version: a new model never serves an old model's prediction.
        self._prefix = f"predcache:{runner.version}:"
        self.in_flight: SingleFlight[str, tuple[CachedPrediction, bool]] = SingleFlight()

    def key_for(self, pair: str) -> str:
        return self._prefix + pair

    async def get(self, pair: str) -> Answer:
        """The prediction for the canonical `pair`; UnknownPair, ModelError or ModelTimeout otherwise."""
        if not self.runner.supports(pair):
            raise UnknownPair(pair)
        if self.cache is None:
            # The no-cache baseline: every request pays for its own model call.
            entry = await self._predict(self._prefix + pair, pair)
            return Answer(entry, Outcome.MISS, ttl_left_s=0.0)

        key = self._prefix + pair
        raw = await self.cache.get(key)
        if isinstance(raw, Miss):
            (self._metrics.cache_miss if raw is Miss.ABSENT else self._metrics.cache_error).inc()
        else:
            cached = CachedPrediction.decode(key, pair, raw)
            age_s = self._clock() - cached.predicted_at if cached is not None else 0.0
            if cached is not None and age_s < self.ttl_s:
                self._metrics.cache_hit.inc()
                return Answer(cached, Outcome.HIT, ttl_left_s=self.ttl_s - age_s)
            # Corrupt, foreign or outlived: a miss, and the model's answer overwrites it.
            self._metrics.cache_miss.inc()

        (entry, stored), joined = await self.in_flight.do(key, lambda: self._compute_and_store(key, pair))
        if joined:
            self._metrics.coalesced.inc()
        return Answer(entry, Outcome.MISS, ttl_left_s=self.ttl_s, collapsed=joined, stored=stored)

    async def _compute_and_store(self, key: str, pair: str) -> tuple[CachedPrediction, bool]:
        entry = await self._predict(key, pair)
        assert self.cache is not None
        stored = await self.cache.set(key, entry.encode(), self.ttl_s)
        if stored:
            self._metrics.cache_writes.inc()
        return entry, stored

    async def _predict(self, key: str, pair: str) -> CachedPrediction:
        metrics = self._metrics
        metrics.model_calls.inc()
        started = time.perf_counter()
        try:
            price = await self.runner.predict(pair)
        except PredcacheError:
            metrics.model_errors.inc()
            raise
        duration_s = time.perf_counter() - started
        metrics.model_duration.observe(duration_s)
        return CachedPrediction.create(
            key=key,
            pair=pair,
            price=price,
            horizon_s=self.runner.horizon_s,
            model_version=self.runner.version,
            predicted_at=self._clock(),
            model_duration_s=duration_s,
        )
