"""The one place that combines the cache, single-flight, the fleet and the model into an answer.

For an input: refuse it if the model says it cannot predict it; look in the near-cache, else in the
cache; serve a hit (refreshing it early in the background when its time has come) or a stale entry
(refreshing it in the background); on a miss, join the key's one fill in flight, which takes the
fleet's lease, calls the model and stores the answer. Freshness rules live in freshness.py, forgetting
predictions in invalidation.py.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from service.caching.backends import CacheBackend, RedisBackend
from service.caching.entry import DEFAULT_MAX_ENTRY_BYTES, ZERO, CachedPrediction, Generation
from service.caching.fleet import Filled, Fleet
from service.caching.freshness import ANY_AGE, Freshness, Lifetimes, Outcome, classify
from service.caching.generation import Generations
from service.caching.invalidation import Invalidation
from service.caching.lookup import Lookup
from service.caching.near_cache import NearCache, NearEntry
from service.caching.singleflight import SingleFlight
from service.caching.write_back import WriteBack
from service.errors import PredcacheError, UnknownInput
from service.metrics import Metrics
from service.models.inputs import ModelInput
from service.models.runner import ModelRunner, UncachedBody
from service.redis import keyspace

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Answer:
    """A prediction and how it was obtained, for the response headers."""

    entry: CachedPrediction
    outcome: Outcome
    collapsed: bool = False  # this request joined a model call another request (or replica) made
    stored: bool = False  # the model's prediction was written to the cache
    forced: bool = False  # the request's own Cache-Control sent it to the model


class Predictions:
    """Answers `get(input)` from the cache when it can, else from one model call per key at a time."""

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
        near_max_bytes: int = 64 * 1024 * 1024,
        near_keep_for_outages: bool = True,
        max_entry_bytes: int = DEFAULT_MAX_ENTRY_BYTES,
        fleet: Fleet | None = None,
        generations: Generations | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.runner = runner
        self.cache = cache
        self.grace_s = grace_s
        self.fleet = fleet
        self.lifetimes = Lifetimes(ttl_s, xfetch_beta, rng)
        self.near = NearCache(
            ttl_s=near_ttl_s,
            max_entries=near_max_entries,
            max_bytes=near_max_bytes,
            keep_for_outages=near_keep_for_outages,
        )
        self.max_entry_bytes = max_entry_bytes
        self._metrics = metrics
        self._clock = clock
        # Read from no cache on every request: kept in process, see generation.py.
        self.generations = (
            Generations(cache, runner.version, remember_s=ttl_s + grace_s + runner.timeout_s)
            if generations is None
            else generations
        )
        self.lookup = (
            None
            if cache is None
            else Lookup(
                cache,
                self.near,
                runner,
                metrics,
                generations=self.generations,
                max_entry_bytes=max_entry_bytes,
            )
        )
        self.in_flight: SingleFlight[str, Filled] = SingleFlight()
        # Only Redis can fail a write; the embedded cache never does.
        self.write_back = (
            WriteBack(cache, self.near, self.generations, metrics, grace_s=grace_s)
            if isinstance(cache, RedisBackend)
            else None
        )
        self.invalidation = Invalidation(
            cache=cache, near=self.near, in_flight=self.in_flight, fleet=fleet, generations=self.generations
        )

    def key_for(self, model_input: ModelInput) -> str:
        """`predcache:{<model version>:<digest of the input's canonical JSON>}` (see keyspace.py): keys
        carry the model version, so a new model never serves an old model's prediction."""
        return keyspace.entry_key(self.runner.version, model_input.digest)

    async def get(self, model_input: ModelInput, freshness: Freshness = ANY_AGE) -> Answer:
        """The prediction for `model_input`; UnknownInput, ModelError or ModelTimeout otherwise."""
        self.runner.check(model_input)
        key = self.key_for(model_input)
        if self.cache is None:
            # The no-cache baseline: every request pays for its own model call.
            return Answer(await self._predict(key, model_input, generation=ZERO), Outcome.MISS)

        near = self.near.get(key)
        if near is not None and near.is_trusted():
            return await self._serve(key, model_input, near.generation, near.entry, freshness)
        assert self.lookup is not None
        [(generation, cached)] = await self.lookup.read_many([(key, model_input, near)], count=True)
        return await self._serve(key, model_input, generation, cached, freshness)

    def plain_hit(self, model_input: ModelInput) -> CachedPrediction | None:
        """The entry for `model_input` when the near-cache may serve it as a hit with nothing else to
        do: trusted, fresh and not yet due for an early refresh (the client's Cache-Control is the
        caller's to rule out). None sends the request through `get`, which decides everything else.
        The shortcut the hit path takes: no coroutine, no outcome, no freshness rules."""
        self.runner.check(model_input)
        near = None if self.cache is None else self.near.get(self.key_for(model_input))
        # near.is_trusted(), inlined: this runs on every hit.
        if near is None or near.until <= time.monotonic():
            return None
        entry = near.entry
        if not self._clock() - entry.predicted_at < entry.refresh_s <= entry.fresh_s:
            return None
        self._metrics.cache_hit.inc()
        return entry

    async def get_many(
        self, inputs: Sequence[ModelInput], freshness: Freshness = ANY_AGE
    ) -> list[Answer | PredcacheError]:
        """The prediction, or the error, for each input, in order: one cache round trip for all the
        inputs the near-cache cannot answer, then every miss joins its key's one fill (so a batch and
        a single request for one key share a model call, and the runner batches the fills)."""
        keys = [self.key_for(model_input) for model_input in inputs]
        results: list[Answer | PredcacheError | None] = [None] * len(inputs)
        found: dict[int, tuple[Generation, CachedPrediction | None]] = {}
        unread: list[tuple[int, NearEntry | None]] = []
        for i, model_input in enumerate(inputs):
            try:
                self.runner.check(model_input)
            except UnknownInput as exc:
                results[i] = exc
                continue
            near = None if self.cache is None else self.near.get(keys[i])
            if near is not None and near.is_trusted():
                found[i] = (near.generation, near.entry)
            else:
                unread.append((i, near))
        if self.lookup is not None and unread:
            read = await self.lookup.read_many([(keys[i], inputs[i], near) for i, near in unread], count=True)
            found.update(zip((i for i, _ in unread), read, strict=True))

        async def settle(i: int) -> Answer | PredcacheError:
            try:
                if self.cache is None:
                    return Answer(await self._predict(keys[i], inputs[i], generation=ZERO), Outcome.MISS)
                generation, cached = found[i]
                return await self._serve(keys[i], inputs[i], generation, cached, freshness)
            except PredcacheError as exc:
                return exc

        pending = [i for i, result in enumerate(results) if result is None]
        for i, result in zip(pending, await asyncio.gather(*(settle(i) for i in pending)), strict=True):
            results[i] = result
        return [result for result in results if result is not None]

    async def _serve(
        self,
        key: str,
        model_input: ModelInput,
        generation: Generation,
        cached: CachedPrediction | None,
        freshness: Freshness,
    ) -> Answer:
        """`cached` if the freshness rules allow it (refreshing it early or in the background when its
        time has come), else the answer of the key's one fill."""
        now = self._clock()
        newer_than = -math.inf
        forced = freshness.no_cache
        if cached is not None:
            age_s = now - cached.predicted_at
            outcome = classify(cached, age_s, self.grace_s, freshness)
            if outcome is Outcome.HIT:
                self._metrics.cache_hit.inc()
                if age_s >= cached.refresh_s and self._refresh(key, model_input, generation, cached):
                    self._metrics.early_refreshes.inc()
                return Answer(cached, Outcome.HIT)
            if outcome is Outcome.STALE:
                self._metrics.cache_stale.inc()
                if self._refresh(key, model_input, generation, cached):
                    self._metrics.background_refreshes.inc()
                return Answer(cached, Outcome.STALE)
            self._metrics.cache_miss.inc()
            forced = forced or freshness.refuses(age_s)
            newer_than = cached.predicted_at
        newer_than = freshness.newer_than(now, newer_than)

        filled, joined = await self.in_flight.do(
            key, lambda: self._fill(key, model_input, generation, newer_than)
        )
        collapsed = joined or filled.from_other_replica
        if collapsed:
            self._metrics.coalesced.inc()
        stored = filled.stored and not joined
        return Answer(filled.entry, Outcome.MISS, collapsed=collapsed, stored=stored, forced=forced)

    # -- reading ------------------------------------------------------------------------------------

    async def _read(self, key: str, model_input: ModelInput) -> tuple[Generation, CachedPrediction | None]:
        """The current generation and the entry of it under `key` (a fill's re-read)."""
        assert self.lookup is not None
        return (await self.lookup.read_many([(key, model_input, None)]))[0]

    def _refresh(
        self, key: str, model_input: ModelInput, generation: Generation, cached: CachedPrediction
    ) -> bool:
        """Start a background refresh of `key` unless one is in flight; True if this call started it."""
        if key in self.in_flight:
            return False
        # The single-flight table owns the task: a miss for the key meanwhile joins it.
        self.in_flight.start(key, lambda: self._fill(key, model_input, generation, cached.predicted_at))
        return True

    # -- filling ------------------------------------------------------------------------------------

    async def _fill(
        self, key: str, model_input: ModelInput, generation: Generation, newer_than: float
    ) -> Filled:
        if self.fleet is None:
            return await self._compute_and_store(key, model_input, generation)
        return await self.fleet.fill(
            key,
            str(model_input),
            generation,
            newer_than,
            read=lambda: self._read(key, model_input),
            compute=lambda generation: self._compute_and_store(key, model_input, generation),
        )

    async def _compute_and_store(self, key: str, model_input: ModelInput, generation: Generation) -> Filled:
        assert self.cache is not None
        epoch = self.near.epoch
        # The call starts after every invalidation this replica knows of by now.
        generation = generation.newest(self.generations.current(key))
        entry = await self._predict(key, model_input, generation)
        if isinstance(entry.body, UncachedBody):
            # The model said to serve this answer but not store it (see contract.Uncached).
            return Filled(entry, stored=False, from_other_replica=False)
        if not generation.covers(self.generations.current(key)):
            # Invalidated while the model ran: the requests that asked before get it (later ones
            # started a call of their own, see Invalidation), and no cache keeps it.
            return Filled(entry, stored=False, from_other_replica=False)
        raw = entry.encode()
        if len(raw) > self.max_entry_bytes:
            # Served, but not written: readers refuse values over the cap.
            self._metrics.cache_oversized.inc()
            log.warning(
                "prediction for %s is %d bytes, over CACHE_MAX_ENTRY_BYTES (%d): served, not cached",
                model_input,
                len(raw),
                self.max_entry_bytes,
            )
            return Filled(entry, stored=False, from_other_replica=False)
        # Redis keeps it through the grace period, in which it is served stale while refreshed.
        stored = await self.cache.set(key, raw, entry.fresh_s + self.grace_s)
        if stored:
            self._metrics.cache_writes.inc()
        # Even unstored (Redis down), the fresh answer replaces a stale near copy, which would
        # otherwise start refresh after refresh until it expired; it is written back from there.
        self.near.remember(entry, generation, epoch)
        if not stored and self.write_back is not None:
            self.write_back.add(key)
        return Filled(entry, stored=stored, from_other_replica=False)

    async def _predict(self, key: str, model_input: ModelInput, generation: Generation) -> CachedPrediction:
        started = time.perf_counter()
        body = await self.runner.predict(model_input)
        # Queueing included: it is what a refresh has to start ahead of expiry to hide.
        duration_s = time.perf_counter() - started
        fresh_s = self.lifetimes.fresh_s()
        return CachedPrediction(
            key=key,
            input=model_input.canonical,
            body=body,
            predicted_at=self._clock(),
            model_duration_s=duration_s,
            fresh_s=fresh_s,
            refresh_s=self.lifetimes.early_refresh_age_s(fresh_s, duration_s),
            generation=generation,
        )

    async def close(self) -> None:
        """At shutdown, once requests have drained: stop fills in flight, finish announcements."""
        await self.in_flight.close()
        if self.write_back is not None:
            await self.write_back.close()
        await self.runner.close()
        if self.fleet is not None:
            await self.fleet.close()
