"""Cache backends: the memory LRU expires and bounds entries; the Redis backend fails open."""

from __future__ import annotations

import time

import fakeredis
import pytest
from redis.asyncio import Redis

from service.caching.backends import MemoryBackend, Miss, RedisBackend
from service.metrics import Metrics
from service.redis.breaker import CircuitBreaker
from service.redis.topology import create_redis_client
from tests.support.redis_server import RedisServer


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_memory_entries_expire() -> None:
    clock = Clock()
    cache = MemoryBackend(10, clock=clock)
    await cache.set("k", b"v", ttl_s=0.5)
    assert await cache.get_many(["k"]) == [b"v"]
    clock.now = 0.5
    assert await cache.get_many(["k"]) == [None]
    assert len(cache) == 0


async def test_memory_is_bounded_least_recently_used_first() -> None:
    cache = MemoryBackend(2, clock=Clock())
    await cache.set("a", b"1", 10)
    await cache.set("b", b"2", 10)
    await cache.get_many(["a"])
    await cache.set("c", b"3", 10)
    assert len(cache) == 2
    assert await cache.get_many(["b", "a"]) == [None, b"1"]


async def test_memory_counters_are_never_evicted_nor_lowered() -> None:
    cache = MemoryBackend(1, clock=Clock())
    assert await cache.advance("generation", 0, step=1) == (None, 1)
    await cache.set("a", b"1", 10)
    await cache.set("b", b"2", 10)
    assert await cache.advance("generation", 0, step=1) == (1, 2)
    assert await cache.advance("generation", 7) == (2, 7)
    assert await cache.advance("generation", 3) == (7, 7)


@pytest.mark.redis
async def test_redis_counters_are_raised_never_lowered(redis: Redis, model_version: str) -> None:
    """The generation counters' one operation: max(stored, floor) + step, atomically, in Redis."""
    backend = RedisBackend(
        redis, metrics=Metrics(), timeout_s=1.0, breaker=CircuitBreaker(cooldown_s=1), owns_client=False
    )
    key = f"predcache:{{{model_version}}}:generation"
    assert await backend.advance(key, 0) == (None, 0)
    assert await redis.get(key) == b"0"  # present from now on: its absence later means Redis lost it
    assert await backend.advance(key, 1_700_000_000_000, step=1) == (0, 1_700_000_000_001)
    assert await backend.advance(key, 5) == (1_700_000_000_001, 1_700_000_000_001)
    assert await backend.advance(key, 5, step=1) == (1_700_000_000_001, 1_700_000_000_002)
    assert await redis.get(key) == b"1700000000002"
    await redis.set(key, b"not a counter")
    assert await backend.advance(key, 3) == (None, 3)
    await redis.delete(key)


async def test_redis_backend_round_trip_with_expiry() -> None:
    client = fakeredis.FakeAsyncRedis()
    backend = RedisBackend(client, metrics=Metrics(), timeout_s=1.0, breaker=CircuitBreaker(cooldown_s=1))
    assert await backend.set("k", b"v", ttl_s=2.5)
    assert await backend.get_many(["k", "absent"]) == [b"v", None]
    assert 2000 < await client.pttl("k") <= 2500
    assert await backend.delete("k")
    assert await backend.get_many(["k"]) == [None]


async def test_unreachable_redis_is_unavailable_not_an_exception() -> None:
    """Nothing listens on port 1: every command fails fast and the breaker opens."""
    client: Redis = create_redis_client("redis://127.0.0.1:1/0", timeout_s=0.2, max_connections=4)
    metrics = Metrics()
    backend = RedisBackend(client, metrics=metrics, timeout_s=0.2, breaker=CircuitBreaker(cooldown_s=30))
    try:
        for _ in range(5):
            assert await backend.get_many(["k"]) is Miss.UNAVAILABLE
        assert not await backend.set("k", b"v", 1)
        assert backend.state == "degraded"
        assert metrics.breaker_opened._value.get() == 1
    finally:
        await backend.close()


@pytest.mark.parametrize(
    "error", ["OOM command not allowed", "READONLY You can't write against a read only replica."]
)
async def test_refused_commands_fail_open_without_opening_the_breaker(error: str) -> None:
    class Refusing(fakeredis.FakeAsyncRedis):
        async def set(self, *args: object, **kwargs: object) -> bool:
            from redis.exceptions import ResponseError

            raise ResponseError(error)

    backend = RedisBackend(
        Refusing(), metrics=Metrics(), timeout_s=1.0, breaker=CircuitBreaker(cooldown_s=30)
    )
    for _ in range(5):
        assert not await backend.set("k", b"v", 1)
    assert backend.state == "ok"


async def test_a_frozen_redis_costs_a_request_one_budget_not_three(private_redis: RedisServer) -> None:
    """After one command times out, the request's lease and write are not sent into the same wall."""
    client = create_redis_client(private_redis.url, timeout_s=0.1, max_connections=4)
    backend = RedisBackend(client, metrics=Metrics(), timeout_s=0.1, breaker=CircuitBreaker(cooldown_s=30))
    try:
        assert await backend.get_many(["k"]) == [None]
        private_redis.freeze()
        started = time.monotonic()
        assert await backend.get_many(["k"]) is Miss.UNAVAILABLE
        assert not await backend.set("k", b"v", 1)
        assert await backend.advance("generation", 0) is Miss.UNAVAILABLE
        assert time.monotonic() - started < 0.25
    finally:
        private_redis.thaw()
        await backend.close()
