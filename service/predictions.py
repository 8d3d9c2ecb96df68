"""The one place that combines the cache, single-flight, leases and the model into an answer for a pair.

Freshness of an entry computed at `t` with TTL `fresh_s` (jittered down from the TTL) and grace `g`:
  [t, t + fresh_s)                HIT; from t + refresh_s on, the next reader refreshes it early
  [t + fresh_s, t + fresh_s + g)  STALE: served at once while one background refresh recomputes it
  from t + fresh_s + g            gone (Redis expired it): a MISS waits for the model
So no response is ever older than TTL + grace.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import math
import random
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from service.cache import CacheBackend, Miss
from service.entry import MAX_ENTRY_BYTES, CachedPrediction
from service.errors import ModelError, ModelTimeout, PredcacheError, UnknownPair
from service.events import Events
from service.lease import Leases
from service.metrics import Metrics
from service.model import ModelRunner
from service.singleflight import SingleFlight

log = logging.getLogger(__name__)

# TTLs are shortened by up to this fraction, so keys warmed together do not expire together.
TTL_JITTER = 0.1
# How often a replica waiting on another's lease re-reads the cache and retries the lease, in case
# the "stored" event was lost or the holder died.
LEASE_POLL_S = 0.1


class Outcome(enum.Enum):
    HIT = "HIT"
    STALE = "STALE"
    MISS = "MISS"


@dataclass(frozen=True, slots=True)
class Freshness:
    """What the client accepts, from its Cache-Control request header."""

    no_cache: bool = False  # a fresh prediction, never a cached one
    max_age_s: float | None = None  # only a prediction at most this old


ANY_AGE = Freshness()


@dataclass(frozen=True, slots=True)
class Answer:
    """A prediction and how it was obtained, for the response headers."""

    entry: CachedPrediction
    outcome: Outcome
    collapsed: bool = False  # this request joined a model call another request (or replica) made
    stored: bool = False  # the model's prediction was written to the cache


@dataclass(frozen=True, slots=True)
class Filled:
    """The result of one fill of a key, shared by every request that waited for it."""

    entry: CachedPrediction
    stored: bool
    from_other_replica: bool


@dataclass(frozen=True, slots=True)
class NearEntry:
    entry: CachedPrediction
    generation: int
    until: float  # monotonic time after which the cache must be asked again


@dataclass(frozen=True, slots=True)
class Fleet:
    """What a replica needs to share model calls with the other replicas of one Redis."""

    leases: Leases
    events: Events


class Predictions:
    """Answers `get(pair)` from the cache when it can, else from one model call per key at a time."""

    def __init__(
        self,
        *,
        runner: ModelRunner,
        cache: CacheBackend | None,
        metrics: Metrics,
        ttl_s: float,
        grace_s: float,
        xfetch_beta: float,
        near_ttl_s: float = 0.0,
        near_max_entries: int = 10_000,
        lease_ttl_s: float = 2.0,
        fleet: Fleet | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.runner = runner
        self.cache = cache
        self.ttl_s = ttl_s
        self.grace_s = grace_s
        self.fleet = fleet
        self._xfetch_beta = xfetch_beta
        self._metrics = metrics
        self._clock = clock
        self._random = rng or random.Random()
        # The prefix carries the model version: a new model never serves an old model's prediction.
        self._prefix = f"predcache:{runner.version}:"
        self.generation_key = self._prefix + "generation"
        self.in_flight: SingleFlight[str, Filled] = SingleFlight()
        self._background: set[asyncio.Task[None]] = set()
        # Decoded entries kept in process for `near_ttl_s`, so most hits skip the cache round trip and
        # the decoding. They obey the same freshness rules (staleness stays bounded by TTL + grace),
        # and every replica drops them when any replica stores, deletes or invalidates (see events).
        self._near: dict[str, NearEntry] = {}
        self._near_ttl_s = near_ttl_s
        self._lease_ttl_s = lease_ttl_s
        self._near_epoch = 0
        self._near_max_entries = near_max_entries
        if fleet is not None:
            fleet.events.add_listener(self._forget_near)

    def key_for(self, pair: str) -> str:
        return self._prefix + pair

    async def get(self, pair: str, freshness: Freshness = ANY_AGE) -> Answer:
        """The prediction for the canonical `pair`; UnknownPair, ModelError or ModelTimeout otherwise."""
        if not self.runner.supports(pair):
            raise UnknownPair(pair)
        if self.cache is None:
            # The no-cache baseline: every request pays for its own model call.
            return Answer(await self._predict(self.key_for(pair), pair, generation=0), Outcome.MISS)

        key = self.key_for(pair)
        now = self._clock()
        near = self._near.get(key)
        cached: CachedPrediction | None
        if near is not None and near.until > time.monotonic():
            generation, cached = near.generation, near.entry
        else:
            generation, cached = await self._read(key, pair, count=True)
        newer_than = -math.inf
        if cached is not None:
            age_s = now - cached.predicted_at
            newer_than = cached.predicted_at
            if freshness.no_cache or (freshness.max_age_s is not None and age_s > freshness.max_age_s):
                self._metrics.cache_miss.inc()
            elif age_s < cached.fresh_s:
                self._metrics.cache_hit.inc()
                if age_s >= cached.refresh_s and self._refresh_in_background(
                    key, pair, generation, newer_than
                ):
                    self._metrics.early_refreshes.inc()
                return Answer(cached, Outcome.HIT)
            elif age_s < cached.fresh_s + self.grace_s and freshness.max_age_s is None:
                self._metrics.cache_stale.inc()
                if self._refresh_in_background(key, pair, generation, newer_than):
                    self._metrics.background_refreshes.inc()
                return Answer(cached, Outcome.STALE)
            else:
                self._metrics.cache_miss.inc()
        if freshness.no_cache:
            newer_than = now  # only a prediction computed after this request arrived
        elif freshness.max_age_s is not None:
            newer_than = max(newer_than, now - freshness.max_age_s)

        filled, joined = await self.in_flight.do(key, lambda: self._fill(key, pair, generation, newer_than))
        collapsed = joined or filled.from_other_replica
        if collapsed:
            self._metrics.coalesced.inc()
        return Answer(filled.entry, Outcome.MISS, collapsed=collapsed, stored=filled.stored and not joined)

    async def invalidate(self, pair: str) -> bool:
        """Forget `pair`'s prediction on every replica; False when the cache could not be reached.

        It bumps the pair's own generation rather than deleting the value: a model call already in
        flight for the pair stores its answer under the old generation, which readers then ignore.
        """
        key = self.key_for(pair)
        return await self._bump(self._pair_generation_key(key), forget=key)

    async def invalidate_all(self) -> bool:
        """Forget every prediction of this model version at once, in O(1): readers ignore entries
        written in an older generation, and Redis expires them as usual."""
        return await self._bump(self.generation_key, forget=self.generation_key)

    async def _bump(self, counter_key: str, *, forget: str) -> bool:
        self._forget_near(forget)
        if self.cache is None or isinstance(await self.cache.incr(counter_key), Miss):
            return self.cache is None
        if self.fleet is not None:
            await self.fleet.events.publish(forget)
        return True

    @staticmethod
    def _pair_generation_key(key: str) -> str:
        return key + ":generation"

    def _forget_near(self, message: str) -> None:
        """A replica stored or invalidated `message` (a key), or moved to a new generation."""
        # Reads and fills in flight now may carry what was just forgotten: they must not put it back.
        self._near_epoch += 1
        if message == self.generation_key:
            self._near.clear()
        else:
            self._near.pop(message, None)

    def _remember_near(self, entry: CachedPrediction, generation: int, epoch: int) -> None:
        """Keep `entry` in process, unless something was forgotten since `epoch` (when it was read)."""
        if self._near_ttl_s <= 0 or epoch != self._near_epoch:
            return
        if len(self._near) >= self._near_max_entries:
            self._near.clear()  # crude but bounded; entries come back on the next read
        self._near[entry.key] = NearEntry(entry, generation, time.monotonic() + self._near_ttl_s)

    def ttl_left_s(self, entry: CachedPrediction) -> float:
        return max(0.0, entry.predicted_at + entry.fresh_s - self._clock())

    # -- reading ------------------------------------------------------------------------------------

    async def _read(self, key: str, pair: str, *, count: bool = False) -> tuple[int, CachedPrediction | None]:
        """The current generation and the entry of it under `key`. With `count`, a lookup that
        finds nothing usable is counted as a miss, or as an error when the cache did not answer."""
        assert self.cache is not None
        epoch = self._near_epoch
        values = await self.cache.get_many((self.generation_key, self._pair_generation_key(key), key))
        if isinstance(values, Miss):
            if count:
                self._metrics.cache_error.inc()
            return 0, None
        raw_all, raw_pair, raw = values
        # Both counters only grow, so their sum changes whenever either is bumped.
        generation = int(raw_all or 0) + int(raw_pair or 0)
        # Absent, corrupt, foreign or of an older generation: a miss, overwritten by the model's answer.
        entry = None if raw is None else CachedPrediction.decode(key, pair, raw)
        if entry is None or entry.generation != generation:
            if count:
                self._metrics.cache_miss.inc()
            return generation, None
        self._remember_near(entry, generation, epoch)
        return generation, entry

    def _refresh_in_background(self, key: str, pair: str, generation: int, newer_than: float) -> bool:
        """Start a refresh of `key` unless one is in flight; True if this call started it."""
        if key in self.in_flight:
            return False
        # The single-flight table owns the task: a miss for the key meanwhile joins it.
        self.in_flight.start(key, lambda: self._fill(key, pair, generation, newer_than))
        return True

    def _early_refresh_age_s(self, fresh_s: float, model_duration_s: float) -> float:
        """XFetch (Vattani, Chierichetti, Lowenstein, VLDB 2015): refresh once
        `now - delta * beta * ln(random()) >= expiry`, delta being the model's time. The random number
        is drawn once per entry rather than once per read, so how early a key refreshes does not grow
        with its read rate (per-read draws refresh a busy key almost as soon as it is stored)."""
        if self._xfetch_beta <= 0:
            return fresh_s  # never: past fresh_s an entry is stale, not early
        # 1 - random() lies in (0, 1], so the logarithm is defined.
        earlier_s = -model_duration_s * self._xfetch_beta * math.log(1.0 - self._random.random())
        return max(0.0, fresh_s - earlier_s)

    # -- filling ------------------------------------------------------------------------------------

    async def _fill(self, key: str, pair: str, generation: int, newer_than: float) -> Filled:
        """A prediction newer than `newer_than`: computed here, or by the replica holding the lease."""
        if self.fleet is None:
            return await self._compute_and_store(key, pair, generation)
        leases, events = self.fleet.leases, self.fleet.events
        loop = asyncio.get_running_loop()
        # The holder's call takes at most the model timeout; its lease lapses at most a lease later
        # if it died. Past both, something is wrong with the lease: compute here.
        deadline = loop.time() + self.runner.timeout_s + self._lease_ttl_s
        waited = False
        # Watch before the first attempt: an event published after this line is never missed.
        with events.watch(key) as watch:
            while True:
                token = await leases.try_acquire(key)
                if isinstance(token, Miss):
                    self._metrics.lease_fallbacks.inc()  # Redis is down: this replica's single-flight only
                    return await self._compute_and_store(key, pair, generation)
                if token is not None:
                    return await self._fill_holding(key, pair, generation, newer_than, token, waited=waited)
                if not waited:
                    waited = True
                    self._metrics.lease_waits.inc()
                remaining = deadline - loop.time()
                if remaining <= 0:
                    self._metrics.lease_timeouts.inc()
                    return await self._compute_and_store(key, pair, generation)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(LEASE_POLL_S, remaining)):
                        await watch.woken.wait()
                watch.woken.clear()
                # The holder's model failed: its waiters here get the same answer as its own, rather
                # than a second model call (and, for a hanging model, a second timeout).
                if watch.failure == "timeout":
                    raise ModelTimeout(pair, self.runner.timeout_s)
                if watch.failure == "error":
                    raise ModelError(pair, "the model failed on the replica computing it")
                generation, entry = await self._read(key, pair)
                if entry is not None and entry.predicted_at > newer_than:
                    return Filled(entry, stored=False, from_other_replica=True)

    async def _fill_holding(
        self, key: str, pair: str, generation: int, newer_than: float, token: str, *, waited: bool
    ) -> Filled:
        assert self.fleet is not None
        outcome = ""
        try:
            if waited:
                # The holder we waited for may have stored and released between our last read
                # and our SET NX: check again before calling the model.
                generation, entry = await self._read(key, pair)
                if entry is not None and entry.predicted_at > newer_than:
                    return Filled(entry, stored=False, from_other_replica=True)
            try:
                async with self.fleet.leases.renewing(key, token):
                    filled = await self._compute_and_store(key, pair, generation)
            except ModelTimeout:
                outcome = "|timeout"
                raise
            except ModelError:
                outcome = "|error"
                raise
            if filled.stored:
                outcome = "stored"
            return filled
        finally:
            # This replica's waiters have their answer; the other replicas' waiters learn of it (and
            # the lease goes) without adding two round trips to this response.
            self._spawn(self._announce(key, token, outcome))

    async def _announce(self, key: str, token: str, outcome: str) -> None:
        """Tell the other replicas how the call went ("stored", or "|timeout"/"|error"), then let
        the lease go. Nothing is published when there is nothing to say (e.g. the store failed)."""
        assert self.fleet is not None
        if outcome:
            await self.fleet.events.publish(key if outcome == "stored" else key + outcome)
        await self.fleet.leases.release(key, token)

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        # Referenced until done (the loop keeps only weak references), and awaited by close().
        task = asyncio.create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def close(self) -> None:
        """At shutdown, once requests have drained: stop fills in flight, finish announcements."""
        await self.in_flight.close()
        await asyncio.gather(*self._background, return_exceptions=True)

    async def _compute_and_store(self, key: str, pair: str, generation: int) -> Filled:
        assert self.cache is not None
        epoch = self._near_epoch
        entry = await self._predict(key, pair, generation)
        raw = entry.encode()
        if len(raw) > MAX_ENTRY_BYTES:
            # Readers refuse values over the cap, so writing one would only cost a round trip.
            self._metrics.cache_write_errors.inc()
            log.warning(
                "prediction for %s is %d bytes, over the %d-byte cap: not cached",
                pair,
                len(raw),
                MAX_ENTRY_BYTES,
            )
            return Filled(entry, stored=False, from_other_replica=False)
        # Redis keeps it through the grace period, in which it is served stale while refreshed.
        stored = await self.cache.set(key, raw, entry.fresh_s + self.grace_s)
        if stored:
            self._metrics.cache_writes.inc()
        # Even unstored (Redis down), the fresh answer replaces a stale near copy, which would
        # otherwise start refresh after refresh until it expired.
        self._remember_near(entry, generation, epoch)
        return Filled(entry, stored=stored, from_other_replica=False)

    async def _predict(self, key: str, pair: str, generation: int) -> CachedPrediction:
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
        fresh_s = self.ttl_s * (1.0 - TTL_JITTER * self._random.random())
        return CachedPrediction.create(
            key=key,
            pair=pair,
            price=price,
            horizon_s=self.runner.horizon_s,
            model_version=self.runner.version,
            predicted_at=self._clock(),
            model_duration_s=duration_s,
            fresh_s=fresh_s,
            refresh_s=self._early_refresh_age_s(fresh_s, duration_s),
            generation=generation,
        )
