"""Reading predictions from the cache: one round trip for any number of keys, each value decoded
and checked, and the replica's own copy where the cache cannot say better (degraded mode)."""

from __future__ import annotations

from collections.abc import Sequence

from service.caching.backends import CacheBackend, Miss
from service.caching.entry import CachedPrediction, Generation
from service.caching.generation import Generations, counter
from service.caching.near_cache import NearCache, NearEntry
from service.metrics import Metrics
from service.models.inputs import ModelInput
from service.models.runner import ModelRunner
from service.redis import keyspace


class Lookup:
    def __init__(
        self,
        cache: CacheBackend,
        near: NearCache,
        runner: ModelRunner,
        metrics: Metrics,
        *,
        generations: Generations,
        max_entry_bytes: int,
    ) -> None:
        self._cache = cache
        self._near = near
        self._runner = runner
        self._metrics = metrics
        self._generations = generations
        self._max_entry_bytes = max_entry_bytes

    async def read_many(
        self, lookups: Sequence[tuple[str, ModelInput, NearEntry | None]], *, count: bool = False
    ) -> list[tuple[Generation, CachedPrediction | None]]:
        """For each (key, input, local copy): the newest generation known and the entry of it, or
        the local copy where the cache cannot say better; in one round trip. With `count`, a lookup
        that finds nothing usable is counted as a miss, or as an error when the cache did not answer."""
        epoch = self._near.epoch
        # The model-wide counter is not read here: in a cluster it lives in another slot (see
        # generation.py). The key's own counter shares the entry's slot.
        values = await self._cache.get_many(
            [name for key, _, _ in lookups for name in (keyspace.key_generation_key(key), key)]
        )
        if isinstance(values, Miss):
            return [self._unreachable(key, local, count) for key, _, local in lookups]
        found = []
        for (key, model_input, local), raw_key, raw in zip(lookups, values[::2], values[1::2], strict=True):
            if isinstance(raw_key, Miss) or isinstance(raw, Miss):
                # In a cluster, the node serving this key could not answer (both share its slot).
                found.append(self._unreachable(key, local, count))
                continue
            # Absent, or not a counter: 0, and the replica's own memory of it still counts.
            generation = self._generations.read(key, counter(raw_key) or 0)
            found.append((generation, self._decoded(key, model_input, raw, generation, local, count, epoch)))
        return found

    def _unreachable(
        self, key: str, local: NearEntry | None, count: bool
    ) -> tuple[Generation, CachedPrediction | None]:
        generation = self._generations.current(key)
        if local is not None and local.generation.covers(generation):
            # Degraded mode: the copy answers by its own freshness until the cache is back, unless
            # an invalidation this replica has learnt of since (by event or re-read) disowns it.
            self._metrics.local_answers.inc()
            return local.generation, local.entry
        if count:
            self._metrics.cache_error.inc()
        return generation, None

    def _decoded(
        self,
        key: str,
        model_input: ModelInput,
        raw: bytes | None,
        generation: Generation,
        local: NearEntry | None,
        count: bool,
        epoch: int,
    ) -> CachedPrediction | None:
        # Absent, corrupt, another input's, not a valid output, or older than an invalidation this
        # replica knows of: a miss, overwritten by the model's answer.
        entry = (
            None
            if raw is None
            else CachedPrediction.decode(key, model_input.canonical, raw, max_bytes=self._max_entry_bytes)
        )
        if entry is None or not entry.generation.covers(generation) or not self._runner.is_output(entry.body):
            if raw is None and local is not None and local.generation.covers(generation):
                # Computed while the cache was down (or its store failed): still good, and on its
                # way to the cache (see write_back.py).
                self._metrics.local_answers.inc()
                return local.entry
            if count:
                self._metrics.cache_miss.inc()
            return None
        self._near.remember(entry, entry.generation, epoch)
        return entry
