"""Failover under load: three replicas over a private Redis Cluster and over a private Sentinel set,
100 requests/s open loop over the 18 demo pairs, the primary serving a hot key SIGKILLed at 3 s.

The measurement is the failover test's own (`tests/support/failover.py`, which also starts the
cluster and Sentinel processes): what `tests/test_cluster.py` asserts, reported here.
"""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import dataclass

from benchmarks.procs import http_get
from tests.support.failover import PAIRS, lose_primary_under_load
from tests.support.redis_cluster import RedisClusterNodes, SentinelSet
from tests.support.service_process import start_replicas

MODES = ("cluster", "sentinel")


@dataclass(frozen=True)
class FailoverSettings:
    hows: tuple[str, ...] = ("SIGKILL",)  # "SIGSTOP" too for a frozen primary
    rate: float = 100.0
    duration_s: float = 12.0
    kill_at_s: float = 3.0
    model_latency_s: float = 0.2
    redis_timeout_s: float = 0.5


def measure(mode: str, how: str, settings: FailoverSettings) -> dict[str, object]:
    """One run on fresh Redis processes and fresh replicas, every key warm before the load."""
    shared: RedisClusterNodes | SentinelSet = RedisClusterNodes() if mode == "cluster" else SentinelSet()
    with shared:
        fleet = start_replicas(
            3,
            *("--redis-url", shared.url, "--demo-model-latency", str(settings.model_latency_s)),
            *("--redis-timeout", str(settings.redis_timeout_s), "--ttl", "60", "--near-cache-seconds", "0"),
            *("--log-level", "WARNING"),
        )
        try:
            for pair in PAIRS:
                http_get(f"{fleet[0].url}/predict?pair={pair}")
            run = asyncio.run(
                lose_primary_under_load(
                    shared,
                    fleet,
                    how,
                    rate=settings.rate,
                    duration_s=settings.duration_s,
                    kill_at_s=settings.kill_at_s,
                )
            )
        finally:
            for replica in fleet:
                replica.stop()
    row = run.as_dict()
    # The failover test's bounds, as figures to compare against.
    row["slowest_bound_ms"] = round((settings.model_latency_s + settings.redis_timeout_s + 1.0) * 1000)
    return row


def run(settings: FailoverSettings) -> dict[str, object]:
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        return {"skipped": "redis-server and redis-cli are needed"}
    return {
        "settings": {
            "rate": settings.rate,
            "duration_s": settings.duration_s,
            "kill_at_s": settings.kill_at_s,
            "model_latency_s": settings.model_latency_s,
            "redis_timeout_s": settings.redis_timeout_s,
            "keys": len(PAIRS),
        },
        "rows": [measure(mode, how, settings) for mode in MODES for how in settings.hows],
    }
