"""The service over a Redis Cluster and over Sentinel: the same promises as on one Redis (one model
call per key for the fleet, invalidations reach every replica), and a primary killed or frozen under
steady load costs no request."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import aiohttp
import orjson
import pytest

from tests.conftest import MakeClient
from tests.support.failover import PAIRS, lose_primary_under_load
from tests.support.models import CountingModel
from tests.support.redis_cluster import RedisClusterNodes, SentinelSet
from tests.support.service_process import start_replicas
from tests.test_fleet import fire, total_model_calls

pytestmark = [pytest.mark.redis, pytest.mark.slow]

MODES = ["cluster", "sentinel"]
MODEL_LATENCY_S = 0.2
REDIS_TIMEOUT_S = 0.5
TOKEN = "s3cret"


@pytest.fixture(params=MODES)
def shared(request: pytest.FixtureRequest) -> RedisClusterNodes | SentinelSet:
    """A private Redis Cluster or Sentinel set, by the test's parameter."""
    fixture = "redis_cluster" if request.param == "cluster" else "redis_sentinel"
    shared: RedisClusterNodes | SentinelSet = request.getfixturevalue(fixture)
    return shared


async def test_cache_hits_collapses_and_invalidates_in_process(
    shared: RedisClusterNodes | SentinelSet, make_client: MakeClient, model_version: str
) -> None:
    """MISS then HIT, 50 concurrent cold requests make one call, DELETE /cache makes the next a MISS."""
    model = CountingModel(version=model_version, latency_s=0.1)
    client = await make_client(model=model, redis_url=shared.url, admin_token=TOKEN, near_ttl_s=0)
    assert (await client.get("/predict?pair=ETH-EUR")).headers["X-Cache"] == "MISS"
    assert (await client.get("/predict?pair=ETH-EUR")).headers["X-Cache"] == "HIT"
    responses = await asyncio.gather(*(client.get("/predict?pair=BTC-USD") for _ in range(50)))
    assert {r.status for r in responses} == {200}
    assert model.calls["BTC-USD"] == 1
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert (await client.delete("/cache", headers=auth)).status == 200
    assert (await client.get("/predict?pair=ETH-EUR")).headers["X-Cache"] == "MISS"
    ready = orjson.loads(await (await client.get("/readyz")).read())
    mode = "cluster" if isinstance(shared, RedisClusterNodes) else "sentinel"
    assert ready["cache"] == "ok"
    assert ready["redis"]["mode"] == mode
    assert ready["redis"]["answering"] == ready["redis"]["nodes"] >= 1


async def test_300_cold_requests_over_three_replicas_call_the_model_once(
    shared: RedisClusterNodes | SentinelSet,
) -> None:
    fleet = start_replicas(
        3, "--redis-url", shared.url, "--demo-model-latency", "0.5", "--redis-timeout", "1"
    )
    try:
        results = await fire([r.url for r in fleet], 300)
        assert {status for status, _, _ in results} == {200}
        assert len({body for _, body, _ in results}) == 1
        assert total_model_calls(fleet) == 1
    finally:
        for replica in fleet:
            replica.stop()


@pytest.mark.parametrize("how", ["SIGKILL", "SIGSTOP"])
async def test_a_primary_lost_under_steady_load_costs_no_request(
    shared: RedisClusterNodes | SentinelSet, how: str
) -> None:
    """SIGKILL (or SIGSTOP: it stays connected but silent) the primary serving a hot key (and in a
    cluster the events channel) under 100 req/s on 18 keys over 3 replicas: every response is 200, none
    slower than the model + the Redis budget + 1 s, at most 2 model calls per key (the TTL outlasts
    the load), the cache hits again within 2 s of the failover, and an invalidation reaches every
    replica."""
    fleet = start_replicas(
        3,
        *("--redis-url", shared.url, "--demo-model-latency", str(MODEL_LATENCY_S)),
        *("--redis-timeout", str(REDIS_TIMEOUT_S), "--ttl", "60", "--near-cache-seconds", "0"),
        *("--admin-token", TOKEN),
    )
    try:
        await fire([r.url for r in fleet], 1, pair=PAIRS[0])
        for pair in PAIRS:  # warm: every key cached before the load starts
            await fire([fleet[0].url], 1, pair=pair)
        run = await lose_primary_under_load(shared, fleet, how)
        print(run.line())
        if path := os.environ.get("PREDCACHE_FAILOVER_FIGURES"):
            with Path(path).open("a") as out:  # noqa: ASYNC230 - one line, after the load
                out.write(run.line() + "\n")
        assert run.statuses == {200: len(run.sent)}
        assert run.worst_s < MODEL_LATENCY_S + REDIS_TIMEOUT_S + 1.0
        assert run.calls_during <= 2 * len(PAIRS)
        assert run.late, "the load ended before the cache could be back"
        assert all(s.cache == "HIT" for s in run.late if s.pair == run.pair), "the hot key is not a hit again"
        assert run.late_hits / len(run.late) > 0.9
        assert run.local_after_back == 0
        pair = run.pair

        # The subscriptions are back: an invalidation made on one replica reaches the others at once.
        async with aiohttp.ClientSession() as session:
            auth = {"Authorization": f"Bearer {TOKEN}"}
            assert (await session.delete(f"{fleet[0].url}/cache", headers=auth)).status == 200
            await asyncio.sleep(0.05)  # a pub/sub message's delay, far below the 1 s refresh
            for replica, asked in zip(fleet[1:], (pair, next(p for p in PAIRS if p != pair)), strict=True):
                response = await session.get(f"{replica.url}/predict", params={"pair": asked})
                assert response.headers["X-Cache"] == "MISS"
    finally:
        for replica in fleet:
            replica.stop()
