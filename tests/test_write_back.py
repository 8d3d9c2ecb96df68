"""The write-back's one Redis operation: our copy replaces an absent, older, older-generation or
broken entry, and never a newer one; it lives only what is left of its life."""

from __future__ import annotations

import asyncio
import time

import pytest
from redis.asyncio import Redis

from service.caching.backends import RedisBackend
from service.caching.entry import CachedPrediction, Generation
from service.caching.generation import Generations
from service.caching.near_cache import NearCache
from service.caching.write_back import WriteBack
from service.metrics import Metrics
from service.redis import keyspace
from service.redis.breaker import CircuitBreaker
from tests.support.keys import pair_entry, pair_key

pytestmark = pytest.mark.redis

GRACE_S = 5.0
OURS = Generation(5, 0)


async def write_back(redis: Redis, ours: CachedPrediction, generations: Generations) -> None:
    """Hand `ours`, this replica's copy, to a write-back and wait until it is done with it."""
    metrics = Metrics()
    backend = RedisBackend(
        redis, metrics=metrics, timeout_s=1.0, breaker=CircuitBreaker(cooldown_s=1.0), owns_client=False
    )
    near = NearCache(ttl_s=0.0, max_entries=10, max_bytes=1 << 20)
    near.remember(ours, ours.generation, near.epoch)
    writer = WriteBack(backend, near, generations, metrics, grace_s=GRACE_S)
    try:
        writer.add(ours.key)
        for _ in range(100):
            await asyncio.sleep(0.01)
            if not writer:
                return
        pytest.fail("the write-back did not finish within a second")
    finally:
        await writer.close()


@pytest.mark.parametrize(
    ("stored", "kept"),
    [
        (None, False),
        ("newer", True),
        ("as old", True),
        ("older", False),
        ("newer, of an older generation", False),
        ("not an entry", False),
    ],
)
async def test_a_write_back_replaces_only_what_is_not_newer(
    redis: Redis, model_version: str, stored: str | None, kept: bool
) -> None:
    key = pair_key(model_version, "ETH-EUR")
    now = time.time()
    ours = pair_entry(key, "ETH-EUR", 1.0, predicted_at=now - 1.0, generation=OURS)
    theirs = {
        "newer": pair_entry(key, "ETH-EUR", 2.0, predicted_at=now, generation=OURS).encode(),
        "as old": pair_entry(key, "ETH-EUR", 2.0, predicted_at=now - 1.0, generation=OURS).encode(),
        "older": pair_entry(key, "ETH-EUR", 2.0, predicted_at=now - 9.0, generation=OURS).encode(),
        "newer, of an older generation": pair_entry(
            key, "ETH-EUR", 2.0, predicted_at=now, generation=Generation(4, 0)
        ).encode(),
        "not an entry": b"\x00garbage",
    }
    if stored is not None:
        await redis.set(key, theirs[stored])
    try:
        await write_back(redis, ours, Generations(None, model_version, remember_s=30.0))
        raw = await redis.get(key)
        assert raw is not None
        assert raw == (theirs[stored] if kept and stored is not None else ours.encode())
        if not kept:
            # What is left of the entry's life: TTL (60 s) + grace, less the second since it was computed.
            expected_ms = (ours.fresh_s + GRACE_S - 1.0) * 1000
            assert expected_ms - 2000 < await redis.pttl(key) <= expected_ms
            assert CachedPrediction.decode(key, ours.input, raw) == ours
    finally:
        await redis.delete(key)


async def test_a_copy_an_invalidation_made_out_of_date_is_not_written_back(
    redis: Redis, model_version: str
) -> None:
    key = pair_key(model_version, "ETH-EUR")
    generations = Generations(None, model_version, remember_s=30.0)
    generations.observe(keyspace.key_generation_key(key), 9)  # DELETE /cache/ETH-EUR, heard of
    await write_back(redis, pair_entry(key, "ETH-EUR", 1.0, generation=OURS), generations)
    assert await redis.get(key) is None
