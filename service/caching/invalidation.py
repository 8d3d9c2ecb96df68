"""Forgetting predictions on every replica: one input's, or all of a model version's at once.

Nothing is deleted. A key's own generation counter, or the model-wide one, is bumped, and readers
ignore entries of an older generation (Redis expires them as usual), so forgetting everything is O(1).
A model call already in flight keeps its answer for the requests that asked before, but stores it
nowhere, and later requests start a call of their own. The event announcing the bump carries the new
value, and makes every replica drop its near-cache copies. See generation.py for why no restarted
or restored Redis brings a forgotten prediction back.
"""

from __future__ import annotations

from service.caching.backends import CacheBackend, Miss
from service.caching.fleet import Filled, Fleet
from service.caching.generation import Generations
from service.caching.near_cache import NearCache
from service.caching.singleflight import SingleFlight


class Invalidation:
    def __init__(
        self,
        *,
        cache: CacheBackend | None,
        near: NearCache,
        in_flight: SingleFlight[str, Filled],
        fleet: Fleet | None,
        generations: Generations,
    ) -> None:
        self._cache = cache
        self._near = near
        self._in_flight = in_flight
        self._fleet = fleet
        self._generations = generations
        generations.add_listener(self._drop_all)
        if fleet is not None:
            fleet.events.add_listener(self.on_event)

    async def forget(self, key: str) -> bool:
        """Forget the prediction under `key`; False when the cache could not be reached."""
        self._drop(key)
        if self._cache is None:
            return True
        counter = await self._generations.bump(key)
        if isinstance(counter, Miss):
            return False
        self._drop(key)  # a request that came meanwhile started its call under the old generation
        if self._fleet is not None:
            await self._fleet.events.publish(self._generations.message(key, counter))
        return True

    async def forget_all(self) -> bool:
        """Forget every prediction of this model version; False when the cache could not be reached."""
        self._drop_all()
        if self._cache is None:
            return True
        counter = await self._generations.bump(None)
        if isinstance(counter, Miss):
            return False
        if self._fleet is not None:
            # The new value travels in the event: the other replicas need no read to learn it.
            await self._fleet.events.publish(self._generations.message(None, counter))
        return True

    def on_event(self, message: str) -> None:
        """Another replica stored `message` (a key), or bumped a counter (`<counter>=<value>`)."""
        counter = self._generations.parse(message)
        if counter is None:
            self._near.forget(message)  # a newer entry is in the cache: read it rather than the copy
            return
        key = self._generations.observe(*counter)
        if key is not None:
            self._drop(key)
        # A raised model-wide generation drops everything through the listener.

    def _drop(self, key: str) -> None:
        self._near.forget(key)
        self._in_flight.detach(key)

    def _drop_all(self) -> None:
        self._near.forget_all()
        self._in_flight.detach()
