"""Forgetting predictions on every replica: one input's, or all of a model version's at once.

Nothing is deleted. A key's own generation counter, or the model-wide one, is bumped, and readers
ignore entries of an older generation (Redis expires them as usual), so forgetting everything is O(1)
and a model call already in flight stores its answer under the old generation, which readers then
ignore. The event announcing the bump makes every replica drop its near-cache copies.
"""

from __future__ import annotations

from service.caching.backends import CacheBackend, Miss
from service.caching.fleet import Fleet
from service.caching.generation import ModelGeneration
from service.caching.near_cache import NearCache
from service.redis import keyspace


class Invalidation:
    def __init__(
        self,
        *,
        cache: CacheBackend | None,
        near: NearCache,
        fleet: Fleet | None,
        model_generation: ModelGeneration,
    ) -> None:
        self._cache = cache
        self._near = near
        self._fleet = fleet
        self._model_generation = model_generation
        if fleet is not None:
            fleet.events.add_listener(self.on_event)

    async def forget(self, key: str) -> bool:
        """Forget the prediction under `key`; False when the cache could not be reached."""
        self.on_event(key)
        cache = self._cache
        if cache is None:
            return True
        if isinstance(await cache.incr(keyspace.key_generation_key(key)), Miss):
            return False
        if self._fleet is not None:
            await self._fleet.events.publish(key)
        return True

    async def forget_all(self) -> bool:
        """Forget every prediction of this model version; False when the cache could not be reached."""
        self._near.forget_all()
        if self._cache is None:
            return True
        counter = await self._cache.incr(self._model_generation.key)
        if isinstance(counter, Miss):
            return False
        self._model_generation.observe(counter)
        if self._fleet is not None:
            # The new value travels in the event: the other replicas need no read to learn it.
            await self._fleet.events.publish(self._model_generation.message(counter))
        return True

    def on_event(self, message: str) -> None:
        """A replica stored or invalidated `message` (a key), or moved to a new generation."""
        counter = self._model_generation.parse(message)
        if counter is not None:
            self._model_generation.observe(counter)
            self._near.forget_all()
        else:
            self._near.forget(message)
