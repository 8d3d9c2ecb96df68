"""The model-wide generation kept in process: set by events, re-read from the cache, never undone by
a read that an event overtook."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from service.caching.backends import MemoryBackend, Miss
from service.caching.generation import ModelGeneration

KEY = "predcache:{v1}:generation"


async def test_refresh_reads_the_counter_and_events_carry_it() -> None:
    cache = MemoryBackend(10)
    generation = ModelGeneration(cache, KEY)
    await cache.incr(KEY)
    await cache.incr(KEY)
    await generation.refresh()
    assert generation.value == 2
    assert generation.parse(generation.message(7)) == 7
    assert generation.parse("predcache:{v1:abc}") is None
    assert generation.parse(KEY + "=x") is None


class SlowCache(MemoryBackend):
    """Answers reads only once `release` is set: an event can arrive meanwhile."""

    def __init__(self) -> None:
        super().__init__(10)
        self.release = asyncio.Event()

    async def get_many(self, keys: Sequence[str]) -> Sequence[bytes | Miss | None] | Miss:
        await self.release.wait()
        return await super().get_many(keys)


async def test_a_read_overtaken_by_an_event_does_not_undo_it() -> None:
    cache = SlowCache()
    generation = ModelGeneration(cache, KEY)
    refreshing = asyncio.create_task(generation.refresh())
    await asyncio.sleep(0)
    generation.observe(5)  # another replica's DELETE /cache, while the read is on its way
    cache.release.set()
    await refreshing
    assert generation.value == 5


async def test_a_cache_that_does_not_answer_keeps_the_value_known() -> None:
    class Down(MemoryBackend):
        async def get_many(self, keys: Sequence[str]) -> Sequence[bytes | Miss | None] | Miss:
            return Miss.UNAVAILABLE

    generation = ModelGeneration(Down(10), KEY)
    generation.observe(3)
    await generation.refresh()
    assert generation.value == 3
