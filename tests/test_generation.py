"""The generations kept in process: set by events and bumps, re-read from the cache, never lowered by
a read that an event overtook nor by a cache that lost its counters, which they are written back to."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from service.caching.backends import CacheBackend, CacheState, MemoryBackend, Miss
from service.caching.entry import Generation
from service.caching.generation import Generations
from service.redis import keyspace

VERSION = "v1"
MODEL = keyspace.model_generation_key(VERSION)
KEY = keyspace.entry_key(VERSION, "abc")
KEY_COUNTER = keyspace.key_generation_key(KEY)


class Clock:
    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Restartable:
    """A cache that loses everything when told, as a Redis restarted empty does."""

    state: CacheState = "ok"

    def __init__(self) -> None:
        self.inner = MemoryBackend(10)

    def restart(self) -> None:
        self.inner = MemoryBackend(10)

    async def get_many(self, keys: Sequence[str]) -> Sequence[bytes | Miss | None] | Miss:
        return await self.inner.get_many(keys)

    async def set(self, key: str, value: bytes, ttl_s: float) -> bool:
        return await self.inner.set(key, value, ttl_s)

    async def delete(self, key: str) -> bool:
        return await self.inner.delete(key)

    async def advance(self, key: str, floor: int, step: int = 0) -> tuple[int | None, int] | Miss:
        return await self.inner.advance(key, floor, step)

    async def close(self) -> None:
        await self.inner.close()


def generations(cache: CacheBackend | None = None, *, remember_s: float = 30.0) -> Generations:
    return Generations(MemoryBackend(10) if cache is None else cache, VERSION, remember_s=remember_s)


def test_an_entry_serves_a_reader_only_if_it_is_not_older_than_what_the_reader_knows() -> None:
    known = Generation(5, 2)
    assert Generation(5, 2).covers(known)
    assert Generation(6, 2).covers(known)  # computed after a DELETE /cache this reader missed so far
    assert not Generation(4, 9).covers(known)
    assert not Generation(5, 1).covers(known)
    assert Generation(4, 3).newest(known) == Generation(5, 3)


async def test_refresh_reads_the_counter_and_events_carry_it() -> None:
    cache = MemoryBackend(10)
    await cache.advance(MODEL, 41, step=1)
    known = generations(cache)
    await known.refresh()
    assert known.model == 42
    assert known.parse(known.message(None, 7)) == (MODEL, 7)
    assert known.parse(known.message(KEY, 9)) == (KEY_COUNTER, 9)
    assert known.parse(KEY) is None
    assert known.parse(MODEL + "=x") is None
    assert known.observe(KEY_COUNTER, 9) == KEY
    assert known.current(KEY) == Generation(42, 9)


class SlowCache(MemoryBackend):
    """Answers only once `release` is set: an event can arrive meanwhile."""

    def __init__(self) -> None:
        super().__init__(10)
        self.release = asyncio.Event()

    async def get_many(self, keys: Sequence[str]) -> Sequence[bytes | Miss | None] | Miss:
        await self.release.wait()
        return await super().get_many(keys)


async def test_a_read_overtaken_by_an_event_does_not_undo_it() -> None:
    cache = SlowCache()
    known = generations(cache)
    refreshing = asyncio.create_task(known.refresh())
    await asyncio.sleep(0)
    known.observe(MODEL, 5)  # another replica's DELETE /cache, while the read is on its way
    cache.release.set()
    await refreshing
    assert known.model == 5


async def test_a_cache_that_does_not_answer_keeps_the_value_known() -> None:
    class Down(MemoryBackend):
        async def get_many(self, keys: Sequence[str]) -> Sequence[bytes | Miss | None] | Miss:
            return Miss.UNAVAILABLE

    known = generations(Down(10))
    known.observe(MODEL, 3)
    await known.refresh()
    assert known.model == 3


async def test_a_cache_that_lost_its_counters_gets_them_back_at_the_next_refresh() -> None:
    """Restarted empty (or restored from an older snapshot): the replica keeps what it knew and
    writes the model-wide counter and every key's counter it remembers back."""
    cache = Restartable()
    known = generations(cache)
    known.observe(MODEL, 5)
    known.observe(KEY_COUNTER, 9)
    cache.restart()
    assert known.read(KEY, 0) == Generation(5, 9)
    await known.refresh()
    assert known.model == 5
    assert await cache.get_many([MODEL, KEY_COUNTER]) == [b"5", b"9"]


async def test_a_bump_after_the_cache_lost_a_counter_lands_above_every_value_seen() -> None:
    """Even by a replica that never saw the old value: a bump starts from the time in milliseconds."""
    cache = MemoryBackend(10)
    before = Generations(cache, VERSION, remember_s=30.0, wall_clock=lambda: 1_000.0)
    assert await before.bump(KEY) == 1_000_001
    restarted = MemoryBackend(10)
    late = Generations(restarted, VERSION, remember_s=30.0, wall_clock=lambda: 1_002.5)
    assert await late.bump(KEY) == 1_002_501
    assert await late.bump(None) == 1_002_501
    assert late.current(KEY) == Generation(1_002_501, 1_002_501)


async def test_a_key_is_remembered_for_remember_s_and_at_most_max_keys_of_them() -> None:
    clock = Clock()
    known = Generations(MemoryBackend(10), VERSION, remember_s=10.0, max_keys=2, clock=clock)
    assert known.read(KEY, 4) == Generation(0, 4)
    clock.now = 9.9
    assert known.read(KEY, 0) == Generation(0, 4)  # Redis lost it; this replica did not
    clock.now = 10.0
    assert known.read(KEY, 0) == Generation(0, 0)  # every entry older than 4 is too old to serve now
    for name in ("a", "b", "c"):
        known.observe(keyspace.key_generation_key(name), 1)
    assert [known.current(name).key for name in ("a", "b", "c")] == [0, 1, 1]


async def test_while_the_cache_holds_what_the_replica_knows_a_refresh_only_reads() -> None:
    class Counting(MemoryBackend):
        advanced = 0

        async def advance(self, key: str, floor: int, step: int = 0) -> tuple[int | None, int] | Miss:
            self.advanced += 1
            return await super().advance(key, floor, step)

    cache = Counting(10)
    known = generations(cache)
    await known.refresh()  # nobody created the counter yet: this replica does
    assert cache.advanced == 1
    for _ in range(3):
        await known.refresh()
    assert cache.advanced == 1
