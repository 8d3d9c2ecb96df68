"""The hit path's shortcuts keep what a client and Prometheus see: headers built once per second are
the headers a hit had when they were built per request, and plain counters read at scrape time
count every request, hit or not, as prometheus-client's own did."""

from __future__ import annotations

from collections import Counter

import pytest
from multidict import CIMultiDict
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from service.caching.entry import ZERO, CachedPrediction
from service.http.responses import HitHeaders
from tests.conftest import MakeClient
from tests.support.models import CountingModel

# Every sample /metrics exported before the counters moved out of prometheus-client's classes.
COUNTERS = (
    "background_refreshes", "cache_lookups", "cache_oversized", "cache_write_errors", "cache_writes",
    "early_refreshes", "lease_fallbacks", "lease_timeouts", "lease_waits", "local_cache_answers",
    "model_calls", "model_errors", "model_items", "model_overloaded", "redis_breaker_opened",
    "redis_refusals", "requests", "singleflight_coalesced",
)  # fmt: skip
HISTOGRAMS = (
    "model_batch_size",
    "model_duration_seconds",
    "model_queue_wait_seconds",
    "request_duration_seconds",
)
GAUGES = ("local_cache_only", "model_queue_depth")
EXPORTED = {
    *(f"predcache_{name}{suffix}" for name in COUNTERS for suffix in ("_total", "_created")),
    *(
        f"predcache_{name}{suffix}"
        for name in HISTOGRAMS
        for suffix in ("_bucket", "_count", "_sum", "_created")
    ),
    *(f"predcache_{name}" for name in GAUGES),
}


def test_hit_headers_are_those_of_the_moment_and_built_once_per_tick() -> None:
    now = [0.0]
    headers = HitHeaders(grace_s=5.0, clock=lambda: now[0])
    entry = CachedPrediction("k", b"{}", b"{}", 1000.3, 0.1, 4.6, 4.6, ZERO)
    built: list[tuple[tuple[int, int], CIMultiDict[str]]] = []
    # From before the entry's own time (another replica's clock ahead of ours) to past its expiry.
    for step in range(0, 800):
        now[0] = 999.0 + step * 0.01
        elapsed = now[0] - entry.predicted_at
        age, ttl = max(0, int(elapsed)), max(0, int(entry.predicted_at + entry.fresh_s - now[0]))
        got = headers(entry)
        assert got["Age"] == str(age), now[0]
        assert got["Cache-Status"] == f"predcache; hit; ttl={ttl}", now[0]
        assert got["Cache-Control"] == f"max-age={ttl}, stale-while-revalidate=5", now[0]
        assert (got["X-Cache"], got["Content-Type"]) == ("HIT", "application/json")
        if not built or built[-1][1] is not got:
            built.append(((age, ttl), got))
    # Built again when Age or the TTL changed (and at most once more, at the very boundary of a
    # tick), not per request: 800 requests, a dozen builds.
    fresh = [values for values, _ in built if values[1] > 0]
    assert len(fresh) <= 2 * len(set(fresh)) < 20
    # A refreshed entry under the same key gets its own headers at once.
    refreshed = CachedPrediction("k", b"{}", b"{}", now[0], 0.1, 4.6, 4.6, ZERO)
    assert headers(refreshed)["Age"] == "0"


@pytest.mark.redis
async def test_metrics_count_every_request_as_before(
    make_client: MakeClient, redis: Redis, model_version: str
) -> None:
    client = await make_client(model=CountingModel(version=model_version), redis=redis)
    expected: Counter[tuple[str, str]] = Counter()

    async def call(
        method: str, path: str, endpoint: str, status: int, json: object = None, data: bytes | None = None
    ) -> None:
        response = await client.request(method, path, json=json, data=data)
        assert response.status == status, (method, path, await response.text())
        assert response.content_type == "application/json" or path == "/metrics"
        expected[(endpoint, str(status))] += 1

    await call("GET", "/predict?pair=ETH-EUR", "/predict", 200)  # miss
    for _ in range(3):
        await call("GET", "/predict?pair=ETH-EUR", "/predict", 200)  # hits
    await call("POST", "/predict", "/predict", 200, json={"pair": "ETH-EUR"})  # hit
    await call("GET", "/predict?pair=nope", "/predict", 400)
    await call("POST", "/predict", "/predict", 415, data=b"pair=ETH-EUR")
    await call("POST", "/predict/batch", "/predict/batch", 200, json={"inputs": [{"pair": "ETH-EUR"}]})
    await call("GET", "/nowhere", "unmatched", 404)
    await call("GET", "/healthz", "/healthz", 200)
    await call("GET", "/openapi.json", "/openapi.json", 200)
    response = await client.delete("/predict")
    assert (response.status, response.headers["Allow"]) == (405, "GET,HEAD,POST")
    assert (await response.json())["error"]["code"] == "method_not_allowed"
    expected[("unmatched", "405")] += 1

    text = await (await client.get("/metrics")).text()
    samples = [s for family in text_string_to_metric_families(text) for s in family.samples]
    assert {s.name for s in samples} >= EXPORTED
    counted = {
        (s.labels["endpoint"], s.labels["status"]): s.value
        for s in samples
        if s.name == "predcache_requests_total"
    }
    # /metrics itself is answered after its own scrape is rendered.
    assert {k: v for k, v in counted.items() if v} == dict(expected)
    durations = {
        s.labels["endpoint"]: s.value for s in samples if s.name == "predcache_request_duration_seconds_count"
    }
    per_endpoint: Counter[str] = Counter()
    for (endpoint, _), n in expected.items():
        per_endpoint[endpoint] += n
    assert durations == dict(per_endpoint)
    infinite = {
        s.labels["endpoint"]: s.value
        for s in samples
        if s.name == "predcache_request_duration_seconds_bucket" and s.labels["le"] == "+Inf"
    }
    assert infinite == durations
    lookups = {s.labels["result"]: s.value for s in samples if s.name == "predcache_cache_lookups_total"}
    # The GET miss, then three GET hits, the POST hit and the batch's hit.
    assert lookups == {"hit": 5.0, "miss": 1.0, "stale": 0.0, "error": 0.0}
