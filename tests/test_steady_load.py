"""Steady open-loop load across expiries: after warm-up nobody waits for the model."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from loadtest.cli import main as loadtest
from tests.support.redis_server import RedisServer
from tests.support.service_process import ServiceProcess

pytestmark = [pytest.mark.redis, pytest.mark.slow]

MODEL_LATENCY_S = 0.3


def test_no_request_waits_for_the_model_after_warm_up(private_redis: RedisServer, tmp_path: Path) -> None:
    args = ("--redis-url", private_redis.url, "--demo-model-latency", str(MODEL_LATENCY_S))
    with ServiceProcess(*args, "--ttl", "1", "--stale-seconds", "2") as service:
        report = tmp_path / "run.json"
        status = loadtest(
            [
                "--url", f"{service.url}/predict", "--pair", "ETH-EUR",
                "--rate", "100", "--duration", "6s", "--concurrency", "20", "--warmup", "1",
                "--no-progress", "--json", str(report),
            ]
        )  # fmt: skip
        calls = service.metric("predcache_model_calls_total")
    assert status == 0
    run = orjson.loads(report.read_bytes())
    assert run["errors"] == 0
    assert run["requests"] >= 500
    # No request waited for the model: every answer came from the cache, fresh or stale...
    assert set(run["classes"]) <= {"HIT", "STALE"}
    # ...and well under the model's latency (p99, not max: on a shared two-core machine one
    # scheduling hiccup can exceed any bound; the max is the benchmark's business).
    assert run["latency_ms"]["p99"] < MODEL_LATENCY_S * 1000 / 2
    # About one call per TTL (6 s at TTL 1 s, jittered and refreshed a little early), plus warm-up.
    assert 4 <= calls <= 10
