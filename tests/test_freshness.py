"""Freshness: stale-while-refreshing, the staleness bound, Cache-Control from clients, invalidation."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest
from redis.asyncio import Redis

from tests.conftest import MakeClient
from tests.support.models import CountingModel

pytestmark = pytest.mark.redis

TOKEN = "test-admin-token"


async def test_past_ttl_is_served_stale_while_one_refresh_runs(
    make_client: MakeClient, redis: Redis, model_version: str
) -> None:
    model = CountingModel(version=model_version, latency_s=0.3)
    client = await make_client(model=model, redis=redis, ttl_s=0.3, stale_s=2.0, xfetch_beta=0.0)
    await client.get("/predict?pair=ETH-EUR")
    await asyncio.sleep(0.35)
    started = time.monotonic()
    stale = await asyncio.gather(*(client.get("/predict?pair=ETH-EUR") for _ in range(20)))
    assert time.monotonic() - started < 0.25, "stale answers must not wait for the model"
    assert {r.headers["X-Cache"] for r in stale} == {"STALE"}
    assert {r.headers["Cache-Status"] for r in stale} == {"predcache; hit; fwd=stale"}
    assert stale[0].headers["Cache-Control"] == "max-age=0, stale-while-revalidate=2"
    await asyncio.sleep(0.4)  # the one background refresh has finished
    fresh = await client.get("/predict?pair=ETH-EUR")
    assert fresh.headers["X-Cache"] == "HIT"
    assert model.total_calls == 2
    metrics = await (await client.get("/metrics")).text()
    assert 'predcache_cache_lookups_total{result="stale"} 20.0' in metrics
    assert "predcache_background_refreshes_total 1.0" in metrics


async def test_staleness_never_exceeds_ttl_plus_grace(
    make_client: MakeClient, redis: Redis, model_version: str
) -> None:
    """Past TTL + grace the entry is gone: the next request waits for the model (a MISS)."""
    model = CountingModel(version=model_version, latency_s=0.05)
    client = await make_client(model=model, redis=redis, ttl_s=0.2, stale_s=0.2, xfetch_beta=0.0)
    await client.get("/predict?pair=BTC-USD")
    await asyncio.sleep(0.45)
    response = await client.get("/predict?pair=BTC-USD")
    assert response.headers["X-Cache"] == "MISS"
    age_s = time.time() - _predicted_at(await response.read())
    assert age_s < 0.2


async def test_zero_grace_turns_stale_serving_off(
    make_client: MakeClient, redis: Redis, model_version: str
) -> None:
    model = CountingModel(version=model_version)
    client = await make_client(model=model, redis=redis, ttl_s=0.2, stale_s=0.0, xfetch_beta=0.0)
    await client.get("/predict?pair=BTC-USD")
    await asyncio.sleep(0.25)
    assert (await client.get("/predict?pair=BTC-USD")).headers["X-Cache"] == "MISS"


async def test_early_refresh_happens_before_expiry(make_client: MakeClient, model_version: str) -> None:
    """With a large beta, a reader refreshes before the TTL is up and nobody sees a miss or stale."""
    model = CountingModel(version=model_version, latency_s=0.05)
    # With beta this large the drawn refresh age is almost always 0; the draw is random, so allow
    # the rare entry whose refresh starts too late to finish before expiry.
    client = await make_client(model=model, ttl_s=0.5, stale_s=0.0, xfetch_beta=1000.0)
    await client.get("/predict?pair=XRP-USD")
    outcomes = []
    for _ in range(20):
        await asyncio.sleep(0.05)
        outcomes.append((await client.get("/predict?pair=XRP-USD")).headers["X-Cache"])
    assert outcomes.count("MISS") <= 1
    assert "STALE" not in outcomes
    assert model.total_calls >= 2
    early = [line for line in (await (await client.get("/metrics")).text()).splitlines()
             if line.startswith("predcache_early_refreshes_total ")]  # fmt: skip
    assert float(early[0].split()[1]) >= 1


async def test_no_cache_forces_one_shared_fresh_prediction(
    make_client: MakeClient, redis: Redis, model_version: str
) -> None:
    model = CountingModel(version=model_version, latency_s=0.2)
    client = await make_client(model=model, redis=redis)
    first = await client.get("/predict?pair=SOL-GBP")
    burst = await asyncio.gather(
        *(client.get("/predict?pair=SOL-GBP", headers={"Cache-Control": "no-cache"}) for _ in range(30))
    )
    assert {r.headers["X-Cache"] for r in burst} == {"MISS"}
    assert model.total_calls == 2
    assert _predicted_at(await burst[0].read()) > _predicted_at(await first.read())


async def test_max_age_accepts_only_younger_predictions(
    make_client: MakeClient, redis: Redis, model_version: str
) -> None:
    model = CountingModel(version=model_version)
    client = await make_client(model=model, redis=redis, ttl_s=10)
    await client.get("/predict?pair=ADA-EUR")
    young = await client.get("/predict?pair=ADA-EUR", headers={"Cache-Control": "max-age=5"})
    assert young.headers["X-Cache"] == "HIT"
    await asyncio.sleep(1.05)
    old = await client.get("/predict?pair=ADA-EUR", headers={"Cache-Control": "max-age=1"})
    assert old.headers["X-Cache"] == "MISS"
    assert model.total_calls == 2
    bad = await client.get("/predict?pair=ADA-EUR", headers={"Cache-Control": "max-age=soon"})
    assert bad.status == 400
    assert orjson.loads(await bad.read())["error"]["code"] == "invalid_cache_control"


async def test_admin_endpoints_are_off_without_a_token(make_client: MakeClient, model_version: str) -> None:
    client = await make_client(model=CountingModel(version=model_version))
    assert (await client.delete("/cache")).status == 404
    assert (await client.delete("/cache/ETH-EUR", headers={"Authorization": "Bearer x"})).status == 404


@pytest.mark.parametrize("authorization", [None, "Bearer wrong", "Basic dGVzdA==", TOKEN, "Bearer"])
async def test_wrong_or_missing_token_is_401_and_changes_nothing(
    make_client: MakeClient, redis: Redis, model_version: str, authorization: str | None
) -> None:
    model = CountingModel(version=model_version)
    client = await make_client(model=model, redis=redis, admin_token=TOKEN)
    await client.get("/predict?pair=ETH-EUR")
    headers = {} if authorization is None else {"Authorization": authorization}
    for path in ("/cache/ETH-EUR", "/cache"):
        response = await client.delete(path, headers=headers)
        assert response.status == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer")  # RFC 6750, 3
        assert orjson.loads(await response.read())["error"]["code"] == "unauthorized"
    assert (await client.get("/predict?pair=ETH-EUR")).headers["X-Cache"] == "HIT"


async def test_delete_one_pair_and_all_pairs(
    make_client: MakeClient, redis: Redis, model_version: str
) -> None:
    model = CountingModel(version=model_version)
    client = await make_client(model=model, redis=redis, admin_token=TOKEN)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    for pair in ("ETH-EUR", "BTC-EUR"):
        await client.get(f"/predict?pair={pair}")
    assert (await client.delete("/cache/eth-eur", headers=auth)).status == 200
    assert (await client.get("/predict?pair=ETH-EUR")).headers["X-Cache"] == "MISS"
    assert (await client.get("/predict?pair=BTC-EUR")).headers["X-Cache"] == "HIT"
    assert (await client.delete("/cache", headers=auth)).status == 200
    # A new generation: no old entry is served, not even as stale.
    assert (await client.get("/predict?pair=BTC-EUR")).headers["X-Cache"] == "MISS"
    assert (await client.get("/predict?pair=BTC-EUR")).headers["X-Cache"] == "HIT"
    assert (await client.delete("/cache/NOT_A_PAIR", headers=auth)).status == 400
    assert model.total_calls == 4


def _predicted_at(body: bytes) -> float:
    from datetime import datetime

    return datetime.fromisoformat(orjson.loads(body)["predicted_at"]).timestamp()
