"""Batches: one endpoint for many inputs, misses from every request gathered into few model calls,
and a model that cannot be overrun."""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from service.metrics import Metrics
from service.models.admission import Admission
from service.models.batcher import Batcher
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


async def test_a_poisoned_batch_fails_only_the_poisoned_input(
    make_client: MakeClient, redis: Redis, model_version: str, caplog: pytest.LogCaptureFixture
) -> None:
    """`predict_batch` raises for a batch holding BAD-USD: the batch is retried in halves until BAD-USD
    is alone, so the other three get their predictions (and are cached), BAD-USD alone gets 503, and
    its error body names neither the other inputs nor the model's exception text, only a request id
    that the log line carrying that text also carries."""
    model = BatchTypedModel(version=model_version)
    model.poison = frozenset({"BAD-USD"})
    client = await make_client(model=model, redis=redis)
    pairs = ["AAA-USD", "BBB-USD", "BAD-USD", "DDD-USD"]
    status, body = await batch(client, [{"pair": pair} for pair in pairs])
    assert status == 200
    results = body["results"]
    assert [r["status"] for r in results] == [200, 200, 503, 200]
    assert [r["prediction"]["pair"] for r in (results[0], results[1], results[3])] == [
        "AAA-USD",
        "BBB-USD",
        "DDD-USD",
    ]
    error = results[2]["error"]
    assert error["code"] == "model_error"
    request_id = error["request_id"]
    assert request_id in error["message"]
    assert_no_leak(error, others=["AAA-USD", "BBB-USD", "DDD-USD"])
    assert any(request_id in r.getMessage() and "poison key" in r.getMessage() for r in caplog.records)
    # One call of four, then halves until BAD-USD is alone: at most 1 + 2 * ceil(log2(4)) calls.
    assert model.batches[0] == 4
    assert len(model.batches) <= 5, model.batches
    calls = len(model.batches)
    status, again = await batch(client, [{"pair": pair} for pair in pairs])
    assert [r.get("cache") for r in again["results"]] == ["HIT", "HIT", None, "HIT"]
    assert again["results"][2]["status"] == 503
    assert again["results"][2]["error"]["request_id"] != request_id  # another failure, another id
    assert model.batches[calls:] == [1]  # the cached three were not computed again


async def test_singles_batched_with_a_poisoned_input_all_get_their_predictions(
    make_client: MakeClient, redis: Redis, model_version: str
) -> None:
    """Ten concurrent single requests batched into one call with BAD-USD: all ten 200, each with its
    own prediction; BAD-USD's 503 names none of them."""
    model = BatchTypedModel(version=model_version)
    model.poison = frozenset({"BAD-USD"})
    client = await make_client(model=model, redis=redis, batch_wait_ms=200)
    pairs = [f"S{i:02d}-USD" for i in range(10)]
    responses = await asyncio.gather(
        *(client.get("/predict", params={"pair": pair}) for pair in [*pairs[:5], "BAD-USD", *pairs[5:]])
    )
    assert model.batches[0] == 11, model.batches  # one batch: the case under test
    statuses = [r.status for r in responses]
    assert statuses == [200] * 5 + [503] + [200] * 5
    good = [orjson.loads(await r.read()) for r in responses if r.status == 200]
    assert [prediction["pair"] for prediction in good] == pairs
    error = orjson.loads(await responses[5].read())["error"]
    assert error["code"] == "model_error"
    assert_no_leak(error, others=pairs)
    assert len(model.batches) <= 1 + 2 * 4, model.batches  # 1 + 2 * ceil(log2(11))


async def test_an_exception_returned_for_one_item_is_a_model_error(
    make_client: MakeClient, redis: Redis, model_version: str
) -> None:
    """An exception in `predict_batch`'s results fails that input alone, with a 503 that names no
    exception text, and counts in predcache_model_errors_total like any model error."""
    model = BatchTypedModel(version=model_version)
    model.broken = frozenset({"BRK-USD"})
    client = await make_client(model=model, redis=redis)
    _, body = await batch(client, [{"pair": "BRK-USD"}, {"pair": "AAA-USD"}, {"pair": "NOPE-USD"}])
    assert [r["status"] for r in body["results"]] == [503, 200, 404]
    assert_no_leak(body["results"][0]["error"], others=["AAA-USD", "NOPE-USD"])
    assert model.batches == [3]
    assert await metric(client, "predcache_model_errors_total") == 1  # the 404 is not the model failing


def assert_no_leak(error: dict[str, Any], *, others: list[str]) -> None:
    text = orjson.dumps(error).decode()
    for other in others:
        assert other not in text
    for leak in ("poison", "ModelSickError", "cannot predict", "batch of"):
        assert leak not in text


class ScriptedBatches:
    """A batch call that fails whenever its batch holds a poisoned argument, counting its calls."""

    def __init__(self, poison: set[int], *, latency_s: float = 0.0) -> None:
        self.poison = poison
        self.latency_s = latency_s
        self.sizes: list[int] = []

    async def __call__(self, arguments: list[Any]) -> list[Any]:
        self.sizes.append(len(arguments))
        await asyncio.sleep(self.latency_s)
        if self.poison.intersection(arguments):
            raise RuntimeError(f"poison in {arguments}")
        return [argument * 10 for argument in arguments]


async def run_batch(call: ScriptedBatches, arguments: list[int], *, budget_s: float = 10.0) -> list[Any]:
    metrics = Metrics()
    batcher = Batcher(
        call,
        admission=Admission(max_concurrency=1, queue_max=1000, metrics=metrics),
        max_size=len(arguments),
        wait_s=0.05,
        retry_budget_s=budget_s,
        metrics=metrics,
    )
    try:
        return await asyncio.gather(*(batcher.submit(a) for a in arguments), return_exceptions=True)
    finally:
        await batcher.close()


@pytest.mark.parametrize(
    ("size", "poison"), [(32, {7}), (32, {0, 31}), (32, {3, 4, 5}), (11, {10}), (2, {1})]
)
async def test_splitting_a_failed_batch_stays_within_its_documented_bound(
    size: int, poison: set[int]
) -> None:
    """k failing inputs in a batch of n cost at most 2 * k * ceil(log2 n) extra calls, never more than
    2 * (n - 1), and every other input gets its own result."""
    call = ScriptedBatches(poison)
    results = await run_batch(call, list(range(size)))
    for argument, result in enumerate(results):
        if argument in poison:
            assert isinstance(result, RuntimeError)
        else:
            assert result == argument * 10
    extra = len(call.sizes) - 1
    assert extra <= min(2 * len(poison) * math.ceil(math.log2(size)), 2 * (size - 1)), call.sizes


async def test_a_batch_where_everything_fails_costs_at_most_twice_its_inputs() -> None:
    call = ScriptedBatches(set(range(16)))
    results = await run_batch(call, list(range(16)))
    assert all(isinstance(result, RuntimeError) for result in results)
    assert len(call.sizes) == 2 * 16 - 1


async def test_splitting_stops_after_one_model_timeout() -> None:
    """A slow model failing on everything: once the retry budget (the model timeout) is spent, the
    inputs not yet isolated fail with the batch's error instead of waiting for more calls."""
    call = ScriptedBatches(set(range(32)), latency_s=0.05)
    started = time.monotonic()
    results = await run_batch(call, list(range(32)), budget_s=0.3)
    elapsed_s = time.monotonic() - started
    assert all(isinstance(result, RuntimeError) for result in results)
    assert len(call.sizes) < 2 * 32 - 1
    assert elapsed_s < 0.05 + 0.3 + 0.3, elapsed_s  # the first call, the budget, a generous allowance


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
