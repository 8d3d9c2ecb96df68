"""Stampede: 1000 concurrent cold requests, for one key and for 20, and the model calls they cost.

The seed's design against predcache with one and with three replicas over one Redis; requests go to
the replicas in turn. Model calls come from the seed's /calls and each replica's /metrics.
"""

from __future__ import annotations

import asyncio
import json
import resource
import statistics
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import aiohttp

from benchmarks.procs import HttpServer, RedisProcess, http_get, python_server

# The demo model knows 18 pairs; BenchModel takes any well-formed pair, so 20 keys are possible.
PAIRS = tuple(
    [f"{base}-{quote}" for base in ("BTC", "ETH", "SOL", "XRP", "ADA") for quote in ("EUR", "USD", "GBP")]
    + ["DOGE-EUR", "DOGE-USD", "DOGE-GBP", "BNB-EUR", "BNB-USD"]
)
# Summed over the replicas: the model calls, and what explains a call too many (Redis errors under
# the burst open the breaker, and a replica that cannot reach Redis falls back to its own single-flight).
METRICS = {
    "model_calls": "predcache_model_calls_total",
    "redis_errors": 'predcache_cache_lookups_total{result="error"}',
    "breaker_opened": "predcache_redis_breaker_opened_total",
    "lease_waits": "predcache_lease_waits_total",
    "lease_timeouts": "predcache_lease_timeouts_total",
    "lease_fallbacks": "predcache_lease_fallbacks_total",
    "cache_writes": "predcache_cache_writes_total",
    "cache_write_errors": "predcache_cache_write_errors_total",
    "coalesced": "predcache_singleflight_coalesced_total",
}


@dataclass(frozen=True)
class StampedeSettings:
    requests: int = 1000
    key_counts: tuple[int, ...] = (1, 20)
    model_latency_s: float = 1.0
    timeout_s: float = 30.0
    trials: int = 3


@dataclass(frozen=True)
class Fleet:
    """One column: the seed, or predcache with `replicas` processes."""

    key: str
    label: str
    replicas: int


FLEETS = (
    Fleet("seed", "seed design", 1),
    Fleet("predcache_1", "predcache, 1 replica", 1),
    Fleet("predcache_3", "predcache, 3 replicas", 3),
)


def raise_fd_limit() -> None:
    """1000 client sockets plus the servers' need more than the usual soft limit of 1024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 8192 if hard == resource.RLIM_INFINITY else min(hard, 8192)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


@contextmanager
def fleet_servers(fleet: Fleet, settings: StampedeSettings) -> Iterator[list[HttpServer]]:
    # Not pinned: this counts model calls, and three replicas, Redis and 1000 connections squeezed
    # onto one core would measure Redis timeouts under starvation instead.
    server_core: list[str] = []
    with ExitStack() as stack:
        redis_url = stack.enter_context(RedisProcess(server_core)).url
        servers: list[HttpServer] = []
        for _ in range(fleet.replicas):
            if fleet.key == "seed":
                server = python_server(
                    "benchmarks.seed_server", "--redis-url", redis_url,
                    "--model-latency", str(settings.model_latency_s), "--ttl", "60",
                    prefix=server_core, ready_path="/calls",
                )  # fmt: skip
            else:
                server = python_server(
                    "service", "--redis-url", redis_url, "--ttl", "60",
                    "--model", "benchmarks.models:BenchModel", "--log-level", "WARNING",
                    "--model-timeout", str(settings.model_latency_s * 10 + 5),
                    prefix=server_core, ready_path="/readyz",
                    env={"BENCH_MODEL_LATENCY_SECONDS": str(settings.model_latency_s)},
                )  # fmt: skip
            servers.append(stack.enter_context(server))
        yield servers


def fleet_counters(fleet: Fleet, servers: list[HttpServer]) -> dict[str, int]:
    """The seed's /calls, or the METRICS summed over every replica's /metrics."""
    if fleet.key == "seed":
        return {"model_calls": sum(json.loads(http_get(s.url + "/calls"))["model_calls"] for s in servers)}
    totals = dict.fromkeys(METRICS, 0.0)
    for server in servers:
        for line in http_get(server.url + "/metrics").decode().splitlines():
            name, _, value = line.rpartition(" ")
            for field, metric in METRICS.items():
                if name == metric:
                    totals[field] += float(value)
    return {field: round(total) for field, total in totals.items()}


async def fire(urls: list[str], timeout_s: float) -> Counter[str]:
    """Send every URL at once, each on its own connection; count the outcomes by status or error."""
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    start = asyncio.Event()

    async def one(session: aiohttp.ClientSession, url: str) -> str:
        await start.wait()
        try:
            async with session.get(url) as response:
                await response.read()
                return str(response.status)
        except (aiohttp.ClientError, TimeoutError) as error:
            return type(error).__name__

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        tasks = [asyncio.create_task(one(session, url)) for url in urls]
        await asyncio.sleep(0)  # every task is parked on the event before any request goes out
        start.set()
        return Counter(await asyncio.gather(*tasks))


def measure_once(fleet: Fleet, keys: int, settings: StampedeSettings) -> dict[str, object]:
    with fleet_servers(fleet, settings) as servers:
        urls = [
            f"{servers[i % len(servers)].url}/predict?pair={PAIRS[i % keys]}"
            for i in range(settings.requests)
        ]
        outcomes = asyncio.run(fire(urls, settings.timeout_s))
        counters = fleet_counters(fleet, servers)
    return {
        "model_calls": counters["model_calls"],
        "outcomes": dict(sorted(outcomes.items())),
        "counters": counters,
    }


def measure(fleet: Fleet, keys: int, settings: StampedeSettings) -> dict[str, object]:
    """`trials` stampedes, each on fresh processes and a fresh Redis; the target needs every one exact."""
    trials = [measure_once(fleet, keys, settings) for _ in range(settings.trials)]
    calls = [int(str(t["model_calls"])) for t in trials]
    return {
        "fleet": fleet.key,
        "label": fleet.label,
        "replicas": fleet.replicas,
        "keys": keys,
        "requests": settings.requests,
        "model_calls": statistics.median_low(calls),
        "model_calls_min": min(calls),
        "model_calls_max": max(calls),
        "calls_per_key": round(statistics.median_low(calls) / keys, 2),
        "trials": trials,
        "meets_target": all(c == keys for c in calls) if fleet.key != "seed" else None,
    }


def run(settings: StampedeSettings) -> dict[str, object]:
    raise_fd_limit()
    rows = [measure(fleet, keys, settings) for keys in settings.key_counts for fleet in FLEETS]
    return {
        "requests": settings.requests,
        "model_latency_s": settings.model_latency_s,
        "trials": settings.trials,
        "pairs": list(PAIRS),
        "rows": rows,
    }
