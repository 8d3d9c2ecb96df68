"""Batches: one endpoint for many inputs, misses from every request gathered into few model calls,
and a model that cannot be overrun."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from service.models.demo import DemoModel
from tests.conftest import MakeClient
from tests.support.models import BatchTypedModel, TypedModel, price_of

pytestmark = pytest.mark.redis

DEMO_PAIRS = sorted(DemoModel.pairs)
Client = TestClient[web.Request, web.Application]


async def metric(client: Client, name: str) -> float:
    text = await (await client.get("/metrics")).text()
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " "))


async def batch(client: Client, inputs: list[object]) -> tuple[int, Any]:
    response = await client.post("/predict/batch", json={"inputs": inputs})
    return response.status, orjson.loads(await response.read())


async def test_a_cold_batch_of_the_demo_pairs_is_one_model_call_then_all_hits(
    make_client: MakeClient, redis: Redis, model_version: str
) -> None:
    model = DemoModel(latency_s=0.05)
    model.version = model_version
    client = await make_client(model=model, redis=redis)
    status, body = await batch(client, [{"pair": pair.lower().replace("-", "/")} for pair in DEMO_PAIRS])
    assert status == 200
    results = body["results"]
    assert isinstance(results, list)
    assert [r["status"] for r in results] == [200] * 18
    assert [r["prediction"]["pair"] for r in results] == DEMO_PAIRS
    assert {r["cache"] for r in results} == {"MISS"}
    assert await metric(client, "predcache_model_calls_total") == 1
    assert await metric(client, "predcache_model_batch_size_sum") == 18
    status, again = await batch(client, [{"pair": pair} for pair in DEMO_PAIRS])
    assert status == 200
    assert [r["cache"] for r in again["results"]] == ["HIT"] * 18
    assert await metric(client, "predcache_model_calls_total") == 1
    single = await client.get("/predict", params={"pair": DEMO_PAIRS[0]})
    assert orjson.loads(await single.read()) == results[0]["prediction"]


async def test_an_invalid_item_fails_the_whole_batch_by_index_and_computes_nothing(
    make_client: MakeClient, redis: Redis, model_version: str
) -> None:
    model = BatchTypedModel(version=model_version)
    client = await make_client(model=model, redis=redis)
    status, body = await batch(
        client, [{"pair": "BTC-USD"}, {"pair": "BTC-USD", "horizon_minutes": 0}, ["x"], {"pair": "ETH-USD"}]
    )
    assert status == 400
    error = body["error"]
    assert isinstance(error, dict)
    assert error["code"] == "invalid_input"
    assert [item["index"] for item in error["items"]] == [1, 2]
    assert error["items"][0]["fields"][0]["field"] == "horizon_minutes"
    assert model.batches == []
    for bad in [{"inputs": []}, {"inputs": "x"}, {"items": []}, [1]]:
        response = await client.post("/predict/batch", json=bad)
        assert response.status == 400
    too_many = await client.post("/predict/batch", json={"inputs": [{"pair": "BTC-USD"}] * 1001})
    assert too_many.status == 400
    assert model.batches == []


async def test_items_fail_alone_and_a_batch_shares_calls_with_single_requests(
    make_client: MakeClient, redis: Redis, model_version: str
) -> None:
    model = BatchTypedModel(version=model_version, latency_s=0.1)
    client = await make_client(model=model, redis=redis)
    single = asyncio.create_task(client.get("/predict", params={"pair": "BTC-USD"}))
    await asyncio.sleep(0.05)  # the single request's call is running when the batch arrives
    _, body = await batch(
        client, [{"pair": "BTC-USD"}, {"pair": "NOPE-USD"}, {"pair": "ETH-USD"}, {"pair": "eth/usd"}]
    )
    assert (await single).status == 200
    results = body["results"]
    assert isinstance(results, list)
    assert [r["status"] for r in results] == [200, 404, 200, 200]
    assert results[0]["cache"] == "collapsed"
    assert results[1]["error"]["code"] == "unknown_input"
    assert results[2]["prediction"] == results[3]["prediction"]
    assert results[2]["prediction"]["price"] == pytest.approx(price_of("ETH-USD") * 1.005)
    assert model.calls[("BTC-USD", 5)] == 1
    assert model.calls[("ETH-USD", 5)] == 1


async def test_a_failing_batch_call_fails_only_its_own_items(
    make_client: MakeClient, redis: Redis, model_version: str
) -> None:
    model = BatchTypedModel(version=model_version, latency_s=0.05)
    model.poison = frozenset({"BAD-USD"})
    client = await make_client(model=model, redis=redis, max_batch_size=2, batch_wait_ms=20)
    first = asyncio.create_task(batch(client, [{"pair": "BAD-USD"}, {"pair": "AAA-USD"}]))
    await asyncio.sleep(0.01)
    second = asyncio.create_task(batch(client, [{"pair": "BBB-USD"}, {"pair": "CCC-USD"}]))
    (_, poisoned), (_, healthy) = await first, await second
    assert [r["status"] for r in poisoned["results"]] == [503, 503]
    assert [r["status"] for r in healthy["results"]] == [200, 200]
    retry = await client.get("/predict", params={"pair": "AAA-USD"})
    assert (retry.status, retry.headers["X-Cache"]) == (200, "MISS")  # the error was not cached


async def test_concurrent_misses_are_gathered_into_few_calls(
    make_client: MakeClient, redis: Redis, model_version: str
) -> None:
    """300 concurrent single requests for 300 distinct inputs: all 200, in about 300/32 calls."""
    model = BatchTypedModel(version=model_version, latency_s=0.02)
    client = await make_client(model=model, redis=redis)
    inputs = [{"pair": f"K{i:03d}-USD", "horizon_minutes": 1 + i % 60} for i in range(300)]
    responses = await asyncio.gather(*(client.post("/predict", json=item) for item in inputs))
    assert {r.status for r in responses} == {200}
    assert sum(model.batches) == 300
    assert len(model.batches) <= 300 / 32 + 3, model.batches


async def test_a_full_queue_refuses_misses_at_once_and_never_hits(
    make_client: MakeClient, redis: Redis, model_version: str
) -> None:
    model = TypedModel(version=model_version, latency_s=0.3)
    client = await make_client(model=model, redis=redis, model_queue_max=10, model_max_concurrency=2)
    assert (await client.get("/predict", params={"pair": "HOT-USD"})).status == 200
    cold = [client.get("/predict", params={"pair": f"C{i:03d}-USD"}) for i in range(100)]
    hits = [client.get("/predict", params={"pair": "HOT-USD"}) for _ in range(50)]
    responses = await asyncio.gather(*cold, *hits)
    cold_statuses = [r.status for r in responses[:100]]
    assert set(cold_statuses) == {200, 503}
    for response in responses[:100]:
        if response.status == 503:
            assert response.headers["Retry-After"] == "1"
            assert orjson.loads(await response.read())["error"]["code"] == "overloaded"
    assert {r.status for r in responses[100:]} == {200}
    assert await metric(client, "predcache_model_overloaded_total") == cold_statuses.count(503)
    # It recovers by itself: once the queue drains, the same keys all answer (a queue's worth at once).
    model.latency_s = 0.01
    for start in range(0, 100, 10):
        again = await asyncio.gather(
            *(client.get("/predict", params={"pair": f"C{i:03d}-USD"}) for i in range(start, start + 10))
        )
        assert {r.status for r in again} == {200}
