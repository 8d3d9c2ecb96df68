"""The API over a real Redis: hits, misses, single-flight, errors, expiry and bad input."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest
from redis.asyncio import Redis

from service.redis import keyspace
from tests.conftest import MakeClient
from tests.support.keys import pair_key
from tests.support.models import CountingModel, SyncCpuModel

pytestmark = pytest.mark.redis


async def keys_of(redis: Redis, version: str) -> list[bytes]:
    """The cached predictions of `version`: leases (released just after a response) and relayed
    streams (expiring a few seconds after their generation) are not."""
    return [
        key
        async for key in redis.scan_iter(match=keyspace.entry_pattern(version))
        if not key.endswith(b":lease") and b":stream:" not in key
    ]


async def test_hit_after_miss_serves_the_same_prediction(
    make_client: MakeClient, redis: Redis, model_version: str
) -> None:
    model = CountingModel(version=model_version)
    client = await make_client(model=model, redis=redis)
    first = await client.get("/predict", params={"pair": "eth-eur"})
    second = await client.get("/predict", params={"pair": "ETH/EUR"})
    assert (first.status, second.status) == (200, 200)
    assert first.headers["X-Cache"] == "MISS"
    assert first.headers["Cache-Status"] == "predcache; fwd=uri-miss; stored"
    assert second.headers["X-Cache"] == "HIT"
    assert second.headers["Cache-Status"].startswith("predcache; hit; ttl=")
    assert await first.read() == await second.read()
    body = orjson.loads(await second.read())
    assert body["pair"] == "ETH-EUR"
    assert body["currency"] == "EUR"
    assert body["model_version"] == model_version
    assert body["predicted_price"] == model.value("ETH-EUR")
    assert model.total_calls == 1
    assert await keys_of(redis, model_version) == [pair_key(model_version, "ETH-EUR").encode()]


async def test_200_concurrent_cold_requests_call_the_model_once(
    make_client: MakeClient, redis: Redis, model_version: str
) -> None:
    model = CountingModel(version=model_version, latency_s=0.2)
    client = await make_client(model=model, redis=redis)
    responses = await asyncio.gather(*(client.get("/predict?pair=BTC-EUR") for _ in range(200)))
    bodies = {await r.read() for r in responses}
    assert [r.status for r in responses] == [200] * 200
    assert len(bodies) == 1
    assert model.total_calls == 1
    # The test client opens at most 100 connections: the first 100 share the model call, the rest hit.
    statuses = [r.headers["Cache-Status"].split("; ttl=")[0] for r in responses]
    assert statuses.count("predcache; fwd=uri-miss; stored") == 1
    collapsed = statuses.count("predcache; fwd=uri-miss; collapsed")
    assert collapsed >= 99
    assert statuses.count("predcache; hit") == 199 - collapsed
    metrics = await (await client.get("/metrics")).text()
    assert "predcache_model_calls_total 1.0" in metrics
    assert f"predcache_singleflight_coalesced_total {collapsed}.0" in metrics


async def test_pairs_never_mix(make_client: MakeClient, redis: Redis, model_version: str) -> None:
    """Concurrent requests for many pairs each get their own pair's prediction."""
    model = CountingModel(version=model_version, latency_s=0.05)
    client = await make_client(model=model, redis=redis)
    pairs = [f"{base}-{quote}" for base in ("BTC", "ETH", "SOL") for quote in ("EUR", "USD")] * 10
    responses = await asyncio.gather(*(client.get("/predict", params={"pair": p}) for p in pairs))
    for pair, response in zip(pairs, responses, strict=True):
        body = orjson.loads(await response.read())
        assert (body["pair"], body["predicted_price"]) == (pair, model.value(pair))
    assert model.total_calls == 6


async def test_expiry_causes_one_recompute(make_client: MakeClient, redis: Redis, model_version: str) -> None:
    model = CountingModel(version=model_version, latency_s=0.05)
    client = await make_client(model=model, redis=redis, ttl_s=0.3, stale_s=0.0, xfetch_beta=0.0)
    assert (await client.get("/predict?pair=SOL-USD")).headers["X-Cache"] == "MISS"
    assert (await client.get("/predict?pair=SOL-USD")).headers["X-Cache"] == "HIT"
    await asyncio.sleep(0.4)
    after = await asyncio.gather(*(client.get("/predict?pair=SOL-USD") for _ in range(20)))
    assert {r.headers["X-Cache"] for r in after} == {"MISS"}
    assert model.total_calls == 2


async def test_model_error_reaches_all_waiters_is_not_cached_and_is_retried(
    make_client: MakeClient, redis: Redis, model_version: str
) -> None:
    model = CountingModel(version=model_version, latency_s=0.1)
    model.fail = True
    client = await make_client(model=model, redis=redis)
    failed = await asyncio.gather(*(client.get("/predict?pair=ADA-GBP") for _ in range(20)))
    assert [r.status for r in failed] == [503] * 20
    error = orjson.loads(await failed[0].read())["error"]
    assert error["code"] == "model_error"
    assert model.total_calls == 1
    assert await keys_of(redis, model_version) == []
    model.fail = False
    retried = await client.get("/predict?pair=ADA-GBP")
    assert retried.status == 200
    assert retried.headers["X-Cache"] == "MISS"
    assert model.total_calls == 2


async def test_model_timeout_gives_504_to_every_waiter(
    make_client: MakeClient, redis: Redis, model_version: str
) -> None:
    model = CountingModel(version=model_version)
    model.hang = True
    client = await make_client(model=model, redis=redis, model_timeout_s=0.2)
    started = time.monotonic()
    responses = await asyncio.gather(*(client.get("/predict?pair=XRP-EUR") for _ in range(10)))
    assert [r.status for r in responses] == [504] * 10
    assert time.monotonic() - started < 2.0
    assert orjson.loads(await responses[0].read())["error"]["code"] == "model_timeout"
    assert await keys_of(redis, model_version) == []


@pytest.mark.parametrize("leaver", ["first", "all"])
async def test_disconnecting_waiters_leave_the_call_intact(
    make_client: MakeClient, redis: Redis, model_version: str, leaver: str
) -> None:
    """A client that hangs up never cancels the model call; it is stored even if everyone left."""
    model = CountingModel(version=model_version, latency_s=0.3)
    client = await make_client(model=model, redis=redis)
    leaving = asyncio.create_task(client.get("/predict?pair=DOGE-USD"))
    await asyncio.sleep(0.05)
    staying = (
        []
        if leaver == "all"
        else [asyncio.create_task(client.get("/predict?pair=DOGE-USD")) for _ in range(5)]
    )
    await asyncio.sleep(0.05)
    leaving.cancel()
    responses = await asyncio.gather(*staying)
    assert [r.status for r in responses] == [200] * len(staying)
    await asyncio.sleep(0.4)
    after = await client.get("/predict?pair=DOGE-USD")
    assert after.headers["X-Cache"] == "HIT"
    assert model.total_calls == 1


@pytest.mark.parametrize(
    ("query", "status", "code"),
    [
        ("", 400, "invalid_pair"),
        ("pair=", 400, "invalid_pair"),
        ("pair=ETH-EUR&pair=BTC-EUR", 400, "invalid_pair"),
        ("pair=" + "A" * 10_000, 400, "invalid_pair"),
        ("pair=ETH_EUR", 400, "invalid_pair"),
        ("pair=ETH-EUR%00", 400, "invalid_pair"),
        ("pair=ETH%E2%80%90EUR", 400, "invalid_pair"),
        ("pair=ETH-EUR%0D%0ASET%20x%20y", 400, "invalid_pair"),
        ("pair=*", 400, "invalid_pair"),
        ("pair=%FF%FE", 400, "invalid_pair"),
        ("pair=FOO-BAR", 404, "unknown_pair"),
    ],
)
async def test_bad_input_gets_a_json_4xx_and_changes_nothing(
    make_client: MakeClient, redis: Redis, model_version: str, query: str, status: int, code: str
) -> None:
    model = CountingModel(version=model_version, pairs=frozenset({"ETH-EUR", "BTC-EUR"}))
    client = await make_client(model=model, redis=redis)
    response = await client.get("/predict?" + query)
    assert response.status == status
    assert response.content_type == "application/json"
    assert orjson.loads(await response.read())["error"]["code"] == code
    assert model.total_calls == 0
    assert await keys_of(redis, model_version) == []


async def test_unknown_paths_and_methods_are_json(make_client: MakeClient, model_version: str) -> None:
    client = await make_client(model=CountingModel(version=model_version))
    missing = await client.get("/nope")
    assert missing.status == 404
    assert orjson.loads(await missing.read())["error"]["code"] == "not_found"
    wrong = await client.put("/predict?pair=ETH-EUR")
    assert wrong.status == 405


async def test_no_cache_mode_calls_the_model_every_time(make_client: MakeClient, model_version: str) -> None:
    model = CountingModel(version=model_version)
    client = await make_client(model=model, cache_enabled=False)
    responses = [await client.get("/predict?pair=ETH-USD") for _ in range(3)]
    responses += await asyncio.gather(*(client.get("/predict?pair=ETH-USD") for _ in range(5)))
    assert {r.headers["X-Cache"] for r in responses} == {"MISS"}
    assert model.total_calls == 8
    ready = orjson.loads(await (await client.get("/readyz")).read())
    assert ready["cache"] == "disabled"


async def test_embedded_cache_without_redis(make_client: MakeClient, model_version: str) -> None:
    model = CountingModel(version=model_version, latency_s=0.05)
    client = await make_client(model=model)
    responses = await asyncio.gather(*(client.get("/predict?pair=BTC-GBP") for _ in range(50)))
    assert {r.status for r in responses} == {200}
    assert (await client.get("/predict?pair=BTC-GBP")).headers["X-Cache"] == "HIT"
    assert model.total_calls == 1


async def test_sync_cpu_bound_model_does_not_stall_hits(
    make_client: MakeClient, redis: Redis, model_version: str
) -> None:
    """While a synchronous model burns a second in its thread, hits for another pair stay fast."""
    model = SyncCpuModel(version=model_version, latency_s=1.0)
    client = await make_client(model=model, redis=redis)
    model.latency_s = 0.0
    assert (await client.get("/predict?pair=ETH-EUR")).status == 200
    model.latency_s = 1.0
    slow = asyncio.create_task(client.get("/predict?pair=BTC-EUR"))
    await asyncio.sleep(0.1)
    hit_times = []
    for _ in range(20):
        started = time.monotonic()
        response = await client.get("/predict?pair=ETH-EUR")
        hit_times.append(time.monotonic() - started)
        assert response.headers["X-Cache"] == "HIT"
    assert not slow.done(), "the hits must have run while the model was still busy"
    assert max(hit_times) < 0.5
    assert (await slow).status == 200


async def test_readyz_and_healthz(make_client: MakeClient, redis: Redis, model_version: str) -> None:
    client = await make_client(model=CountingModel(version=model_version), redis=redis)
    assert orjson.loads(await (await client.get("/healthz")).read()) == {"status": "ok"}
    ready = orjson.loads(await (await client.get("/readyz")).read())
    assert ready["status"] == "ready"
    assert ready["cache"] == "ok"
    assert ready["model"]["version"] == model_version


async def test_corrupt_value_in_redis_is_a_miss_and_is_overwritten(
    make_client: MakeClient, redis: Redis, model_version: str
) -> None:
    model = CountingModel(version=model_version)
    client = await make_client(model=model, redis=redis)
    key = pair_key(model_version, "ETH-GBP")
    await redis.set(key, b"\x00garbage", px=5000)
    response = await client.get("/predict?pair=ETH-GBP")
    assert response.status == 200
    assert response.headers["X-Cache"] == "MISS"
    stored = await redis.get(key)
    assert isinstance(stored, bytes)
    assert stored.endswith(await response.read())
    assert (await client.get("/predict?pair=ETH-GBP")).headers["X-Cache"] == "HIT"
    assert model.total_calls == 1


async def test_lookup_metrics_count_every_result(
    make_client: MakeClient, redis: Redis, model_version: str
) -> None:
    """A cold lookup is a miss, a warm one a hit, each counted once."""
    client = await make_client(model=CountingModel(version=model_version), redis=redis)
    await client.get("/predict?pair=ETH-EUR")
    await client.get("/predict?pair=ETH-EUR")
    metrics = await (await client.get("/metrics")).text()
    assert 'predcache_cache_lookups_total{result="miss"} 1.0' in metrics
    assert 'predcache_cache_lookups_total{result="hit"} 1.0' in metrics
    assert 'predcache_cache_lookups_total{result="error"} 0.0' in metrics
