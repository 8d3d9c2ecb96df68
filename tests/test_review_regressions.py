"""Defects found in review, each pinned by the behaviour a user would have seen."""

from __future__ import annotations

import asyncio
import signal
import time
import urllib.request

import orjson
import pytest
from redis.asyncio import Redis

from service.redis.topology import create_redis_client
from tests.conftest import MakeClient
from tests.support.models import CountingModel
from tests.support.redis_server import RedisServer
from tests.support.service_process import ServiceProcess

TOKEN = "review-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def test_a_unicode_digit_in_max_age_is_a_400_not_a_500(
    make_client: MakeClient, model_version: str
) -> None:
    client = await make_client(model=CountingModel(version=model_version))
    response = await client.get("/predict?pair=ETH-EUR", headers={"Cache-Control": "max-age=\u00b3"})
    assert response.status == 400
    assert orjson.loads(await response.read())["error"]["code"] == "invalid_cache_control"


async def test_a_non_utf8_bearer_token_is_a_401_not_a_500(
    make_client: MakeClient, model_version: str
) -> None:
    client = await make_client(model=CountingModel(version=model_version), admin_token=TOKEN)
    assert client.server.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", client.server.port)
    writer.write(
        b"DELETE /cache HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\r\nContent-Length: 0\r\n\r\n"
    )
    await writer.drain()
    status_line = await reader.readline()
    writer.close()
    assert status_line.split()[1] == b"401"


async def test_delete_all_works_with_the_embedded_cache(make_client: MakeClient, model_version: str) -> None:
    model = CountingModel(version=model_version)
    client = await make_client(model=model, admin_token=TOKEN)
    await client.get("/predict?pair=ETH-EUR")
    assert (await client.get("/predict?pair=ETH-EUR")).headers["X-Cache"] == "HIT"
    assert (await client.delete("/cache", headers=AUTH)).status == 200
    assert (await client.get("/predict?pair=ETH-EUR")).headers["X-Cache"] == "MISS"
    assert (await client.delete("/cache/ETH-EUR", headers=AUTH)).status == 200
    assert (await client.get("/predict?pair=ETH-EUR")).headers["X-Cache"] == "MISS"
    assert model.total_calls == 3


@pytest.mark.redis
async def test_delete_one_pair_outlives_a_model_call_already_in_flight(
    make_client: MakeClient, redis: Redis, model_version: str
) -> None:
    """A prediction that started before the DELETE is not served after it, on any replica."""
    model = CountingModel(version=model_version, latency_s=0.4)
    first = await make_client(model=model, redis=redis, admin_token=TOKEN)
    second = await make_client(model=model, redis=redis)
    in_flight = asyncio.create_task(first.get("/predict?pair=SOL-EUR"))
    await asyncio.sleep(0.1)
    assert (await first.delete("/cache/SOL-EUR", headers=AUTH)).status == 200
    assert (await in_flight).status == 200
    after = await second.get("/predict?pair=SOL-EUR")
    assert after.headers["X-Cache"] == "MISS"
    # The first replica serves the prediction computed after the DELETE, not its own earlier one.
    again = await first.get("/predict?pair=SOL-EUR")
    assert await again.read() == await after.read()
    assert model.total_calls == 2


async def test_with_redis_down_a_stale_key_is_not_refreshed_back_to_back(
    make_client: MakeClient, model_version: str, private_redis: RedisServer
) -> None:
    model = CountingModel(version=model_version, latency_s=0.01)
    redis = create_redis_client(private_redis.url, timeout_s=0.1, max_connections=8)
    try:
        client = await make_client(
            model=model,
            redis=redis,
            ttl_s=0.3,
            stale_s=5.0,
            near_ttl_s=1.0,
            redis_timeout_s=0.1,
            xfetch_beta=0,
        )
        await client.get("/predict?pair=ETH-EUR")
        private_redis.stop()
        await asyncio.sleep(0.35)  # stale now, and Redis is gone
        deadline = time.monotonic() + 0.8
        while time.monotonic() < deadline:
            assert (await client.get("/predict?pair=ETH-EUR")).status == 200
        # About one call per TTL (0.3 s) over these 1.15 s; before the fix, every request that
        # found the stale copy started another refresh (84 calls in a second in review).
        assert model.total_calls <= 5
    finally:
        await redis.aclose()


@pytest.mark.redis
async def test_a_hanging_model_gives_504_on_every_replica_within_one_timeout(
    make_client: MakeClient, redis: Redis, model_version: str
) -> None:
    model = CountingModel(version=model_version)
    model.hang = True
    replicas = [await make_client(model=model, redis=redis, model_timeout_s=0.5) for _ in range(2)]
    started = time.monotonic()
    holder = asyncio.create_task(replicas[0].get("/predict?pair=XRP-USD"))
    await asyncio.sleep(0.05)
    waiter = await replicas[1].get("/predict?pair=XRP-USD")
    assert (await holder).status == 504
    assert waiter.status == 504
    assert time.monotonic() - started < 0.5 + 0.3


@pytest.mark.slow
def test_sigterm_ends_the_process_even_with_a_hung_synchronous_model() -> None:
    args = ("--model", "tests.support.models:hung_sync_model", "--model-timeout", "0.3", "--no-cache")
    with ServiceProcess(*args) as service:
        with pytest.raises(urllib.error.HTTPError) as answered:
            urllib.request.urlopen(f"{service.url}/predict?pair=ETH-EUR", timeout=5)
        assert answered.value.code == 504
        service.signal(signal.SIGTERM)
        assert service.wait(timeout_s=10) == 0
