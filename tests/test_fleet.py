"""Several replicas sharing one real Redis: one model call per key for the whole fleet."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator

import aiohttp
import pytest

from tests.support.redis_server import RedisServer
from tests.support.service_process import ServiceProcess, start_replicas

pytestmark = [pytest.mark.redis, pytest.mark.slow]

MODEL_LATENCY_S = 0.5
# Three replicas, Redis and the test share two cores: give Redis commands a budget that CPU
# contention alone cannot exhaust, so a lease is never given up for a Redis that is merely slow.
REDIS_TIMEOUT = ("--redis-timeout", "1")


@pytest.fixture
def replicas(private_redis: RedisServer, request: pytest.FixtureRequest) -> Iterator[list[ServiceProcess]]:
    extra: tuple[str, ...] = getattr(request, "param", ())
    fleet = start_replicas(
        3,
        "--redis-url",
        private_redis.url,
        "--demo-model-latency",
        str(MODEL_LATENCY_S),
        *REDIS_TIMEOUT,
        *extra,
    )
    yield fleet
    for replica in fleet:
        replica.stop()


async def fire(urls: list[str], count: int, pair: str = "BTC-EUR") -> list[tuple[int, bytes, float]]:
    """`count` concurrent GETs spread round-robin over `urls`: (status, body, seconds) each."""
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(i: int) -> tuple[int, bytes, float]:
            started = time.monotonic()
            async with session.get(f"{urls[i % len(urls)]}/predict", params={"pair": pair}) as response:
                return response.status, await response.read(), time.monotonic() - started

        return await asyncio.gather(*(one(i) for i in range(count)))


def total_model_calls(fleet: list[ServiceProcess]) -> float:
    return sum(replica.metric("predcache_model_calls_total") for replica in fleet)


async def test_300_cold_requests_over_three_replicas_call_the_model_once(
    replicas: list[ServiceProcess],
) -> None:
    results = await fire([r.url for r in replicas], 300)
    assert {status for status, _, _ in results} == {200}
    assert len({body for _, body, _ in results}) == 1
    assert total_model_calls(replicas) == 1


@pytest.mark.parametrize("replicas", [("--lease-ttl", "0.5", "--demo-model-latency", "1.5")], indirect=True)
async def test_lease_shorter_than_the_model_is_renewed(replicas: list[ServiceProcess]) -> None:
    """The holder renews its 0.5 s lease through a 1.5 s model call: still one call."""
    results = await fire([r.url for r in replicas], 300, pair="ETH-USD")
    assert {status for status, _, _ in results} == {200}
    assert total_model_calls(replicas) == 1


async def test_killed_lease_holder_holds_the_others_up_at_most_a_lease(private_redis: RedisServer) -> None:
    lease_s = 1.0
    args = (
        "--redis-url",
        private_redis.url,
        "--demo-model-latency",
        "2.0",
        "--lease-ttl",
        str(lease_s),
        *REDIS_TIMEOUT,
    )
    holder, other = start_replicas(2, *args)
    try:
        async with aiohttp.ClientSession() as session:
            leader = asyncio.create_task(session.get(f"{holder.url}/predict?pair=SOL-EUR"))
            await asyncio.sleep(0.3)  # the holder has taken the lease and is computing
            started = time.monotonic()
            follower = asyncio.create_task(session.get(f"{other.url}/predict?pair=SOL-EUR"))
            await asyncio.sleep(0.2)
            holder.signal(signal.SIGKILL)
            response = await follower
            elapsed = time.monotonic() - started
            assert response.status == 200
            # At most: the rest of the dead holder's lease, then the follower's own 2 s model call.
            assert elapsed < lease_s + 2.0 + 0.5
            leader.cancel()
        assert other.metric("predcache_model_calls_total") == 1
    finally:
        holder.stop()
        other.stop()


async def test_with_redis_stopped_each_replica_calls_the_model_at_most_once_per_key(
    replicas: list[ServiceProcess], private_redis: RedisServer
) -> None:
    private_redis.stop()
    results = await fire([r.url for r in replicas], 150, pair="ADA-USD")
    assert {status for status, _, _ in results} == {200}
    for replica in replicas:
        assert replica.metric("predcache_model_calls_total") <= 1


async def test_invalidation_reaches_every_replica(private_redis: RedisServer) -> None:
    """After DELETE on one replica, the next request on another computes afresh (a MISS)."""
    args = (
        "--redis-url",
        private_redis.url,
        "--demo-model-latency",
        "0.05",
        "--admin-token",
        "s3cret",
        *REDIS_TIMEOUT,
    )
    fleet = start_replicas(2, *args)
    auth = {"Authorization": "Bearer s3cret"}
    try:
        async with aiohttp.ClientSession() as session:
            first, second = (f"{replica.url}/predict?pair=DOGE-EUR" for replica in fleet)
            assert (await session.get(first)).headers["X-Cache"] == "MISS"
            assert (await session.get(second)).headers["X-Cache"] == "HIT"
            assert (await session.delete(f"{fleet[0].url}/cache/DOGE-EUR", headers=auth)).status == 200
            assert (await session.get(second)).headers["X-Cache"] == "MISS"
            assert (await session.get(first)).headers["X-Cache"] == "HIT"
            assert (await session.delete(f"{fleet[1].url}/cache", headers=auth)).status == 200
            assert (await session.get(first)).headers["X-Cache"] == "MISS"
    finally:
        for replica in fleet:
            replica.stop()
