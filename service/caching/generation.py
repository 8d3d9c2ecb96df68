"""Generations: the counters `DELETE /cache` (model-wide) and `DELETE /cache/{pair}` (one key's)
bump, and the highest values of them this replica has seen, which no Redis can take back.

An entry records the pair of counters it was computed under; a reader serves it only if neither is
older than what the reader knows (`Generation.covers`). Redis holds the counters, but a Redis
restarted empty, restored from an older snapshot or failed over to a replica that missed a write
holds lower values than the ones the replicas have seen. So each replica keeps the highest it has
seen (the model-wide one for ever, a key's for `remember_s`: past that, every entry computed before
the bump is too old to serve anyway), reads through the maximum, and writes it back: the model-wide
counter every second, each key's when a read or a lowered model-wide counter shows Redis lost it.
Counters are only ever raised (the backend's `advance`, a Lua script in Redis), and a bump starts
from the wall clock in milliseconds, so a bump made after Redis lost a counter still lands above
every value seen before.

The race this prevents, step by step (DELETE /cache/K while K's model call runs, then a restart):
1. Replica A reads K: generation (0, 0), no entry; A calls the model.
2. DELETE /cache/K on B: K's counter becomes t (B's time in ms); B publishes `K:generation=t`;
   A and B both remember (0, t) for K.
3. Redis restarts empty: K's counter is gone, so Redis would say (0, 0) again.
4. A's call returns. A knows (0, t), which (0, 0) does not cover: A serves the answer to the requests
   that asked before the DELETE and stores it nowhere.
5. Any read of K on A or B takes max(Redis's 0, t) = t: an entry of (0, 0) stored meanwhile (by a
   replica that had not heard of the DELETE) is a miss, and the next refresh puts t back in Redis
   for replicas that never saw it.
Were every replica restarted too, nothing would remember t: see docs/how-it-caches/invalidation.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import Callable

from service.caching.backends import CacheBackend, Miss
from service.caching.entry import ZERO, Generation
from service.redis import keyspace

DEFAULT_REFRESH_S = 1.0


def counter(raw: bytes | Miss | None) -> int | None:
    """A generation counter as the cache holds it; None where absent or not a counter."""
    if isinstance(raw, Miss) or raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        return None


class Generations:
    """The highest generations this replica has seen, kept in process: read on every request, set by
    invalidations and their events, re-read (and written back) every `refresh_s`."""

    def __init__(
        self,
        cache: CacheBackend | None,
        version: str,
        *,
        remember_s: float,
        max_keys: int = 10_000,
        refresh_s: float = DEFAULT_REFRESH_S,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.model_key = keyspace.model_generation_key(version)
        self.model = 0
        self._cache = cache
        self._remember_s = remember_s
        self._max_keys = max_keys
        self._refresh_s = refresh_s
        self._clock = clock
        self._wall_clock = wall_clock
        # Key -> (its counter, until when it is remembered); in that order of time, oldest first.
        self._keys: OrderedDict[str, tuple[int, float]] = OrderedDict()
        self._lost: set[str] = set()  # keys whose counter Redis was seen to hold lower than known
        self._listeners: list[Callable[[], None]] = []
        self._refresher: asyncio.Task[None] | None = None

    def add_listener(self, listener: Callable[[], None]) -> None:
        """Call `listener()` whenever the model-wide generation rises (every entry is then old)."""
        self._listeners.append(listener)

    def current(self, key: str) -> Generation:
        """The newest generation of `key` this replica knows."""
        counter = self._key(key)
        return ZERO if counter == 0 and self.model == 0 else Generation(self.model, counter)

    def read(self, key: str, stored: int) -> Generation:
        """The generation of `key`, Redis holding `stored` for its counter: the higher of that and
        what this replica knows (remembering the first, writing back the second at the next refresh)."""
        known = self._key(key)
        if stored > known:
            self._remember(key, stored)
        elif stored < known:
            self._lost.add(key)
        counter = max(stored, known)
        return ZERO if counter == 0 and self.model == 0 else Generation(self.model, counter)

    def observe(self, counter_key: str, value: int) -> str | None:
        """A counter is now `value` (bumped here, or announced by another replica). Returns the cache
        key whose own counter it is, or None for the model-wide one."""
        if counter_key == self.model_key:
            self._raise_model(value)
            return None
        key = keyspace.key_of_generation_key(counter_key)
        if key is not None and value > self._key(key):
            self._remember(key, value)
        return key

    async def bump(self, key: str | None) -> int | Miss:
        """Invalidate `key` (None: every key): raise its counter above every value seen, by this
        replica or in Redis, and above the time in milliseconds. The new value, or Miss."""
        if self._cache is None:
            return Miss.UNAVAILABLE
        counter_key = self.model_key if key is None else keyspace.key_generation_key(key)
        known = self.model if key is None else self._key(key)
        floor = max(known, int(self._wall_clock() * 1000))
        reply = await self._cache.advance(counter_key, floor, step=1)
        if isinstance(reply, Miss):
            return reply
        self.observe(counter_key, reply[1])
        return reply[1]

    def message(self, key: str | None, value: int) -> str:
        """The event announcing that a counter is now `value`: `<counter key>=<value>`."""
        return f"{self.model_key if key is None else keyspace.key_generation_key(key)}={value}"

    @staticmethod
    def parse(message: str) -> tuple[str, int] | None:
        """The counter key and value `message` announces, or None if it is about something else."""
        name, sep, raw = message.partition("=")
        if not sep or not name.endswith(keyspace.GENERATION_SUFFIX) or not raw.isdigit():
            return None
        return name, int(raw)

    async def refresh(self) -> None:
        """Re-read the model-wide counter. If Redis holds less than this replica knows (it restarted
        empty, or came back from an older snapshot), raise it back, and every key's counter this
        replica remembers with it."""
        if self._cache is None:
            return
        values = await self._cache.get_many((self.model_key,))
        if isinstance(values, Miss) or isinstance(values[0], Miss):
            return
        known = self.model
        stored = counter(values[0])
        if stored is None or stored < known:
            # A read first, and a write only then: a replica raising it costs nothing while it holds.
            reply = await self._cache.advance(self.model_key, known)
            if isinstance(reply, Miss):
                return
            stored = reply[1]
            self._lost.update(self._keys)
        self._raise_model(stored)
        for key in list(self._lost):
            value = self._key(key)
            if value and isinstance(await self._cache.advance(keyspace.key_generation_key(key), value), Miss):
                return  # Redis went away again: the next refresh tries again
            self._lost.discard(key)

    def start(self) -> None:
        self._refresher = asyncio.create_task(self._refresh_forever())

    async def close(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self._refresh_s)
            await self.refresh()

    def _raise_model(self, value: int) -> None:
        if value > self.model:
            self.model = value
            for listener in self._listeners:
                listener()

    def _key(self, key: str) -> int:
        remembered = self._keys.get(key)
        if remembered is None:
            return 0
        if remembered[1] <= self._clock():
            del self._keys[key]
            return 0
        return remembered[0]

    def _remember(self, key: str, value: int) -> None:
        now = self._clock()
        self._keys[key] = (value, now + self._remember_s)
        self._keys.move_to_end(key)
        # Oldest first: those past their time, then (a bound on memory) any beyond `max_keys`.
        while self._keys:
            oldest, (_, until) = next(iter(self._keys.items()))
            if until > now and len(self._keys) <= self._max_keys:
                break
            del self._keys[oldest]
            self._lost.discard(oldest)
