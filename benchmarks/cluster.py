"""Redis Cluster beside one Redis: the hit path (wrk) and the stampede (model calls for cold requests),
each short, over a private 6-node cluster (3 primaries with a replica each) and over one redis-server.

`python -m benchmarks.run --only cluster`; the single-Redis rows are measured here too, with the same
short settings, so the two columns compare like with like.
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import redis

from benchmarks import stampede, wrk
from benchmarks.hitpath import PATH, TTL_S, Measured, Target, measure_once
from benchmarks.procs import (
    LOOPBACK,
    HttpServer,
    RedisProcess,
    core_prefixes,
    http_get,
    python_server,
)
from tests.support.redis_cluster import free_cluster_port

CLUSTER_NODES = 6


@dataclass(frozen=True)
class ClusterSettings:
    connections: int = 10
    hit_duration_s: float = 3.0
    hit_repeats: int = 2
    stampede_requests: int = 1000
    stampede_keys: tuple[int, ...] = (1, 20)
    model_latency_s: float = 1.0


class ClusterNode(RedisProcess):
    """One cluster-enabled redis-server; its bus port (port + 10000) must be free as well."""

    def __init__(self, prefix: list[str], node_timeout_ms: int = 2000) -> None:
        super().__init__(prefix)
        self.port = free_cluster_port()
        self.command[self.command.index("--port") + 1] = str(self.port)
        self._dir = tempfile.mkdtemp(prefix="predcache-bench-node-")  # for its nodes.conf
        self.command += [
            *("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--dir", self._dir),
            *("--cluster-node-timeout", str(node_timeout_ms)),
        ]

    def stop(self) -> None:
        super().stop()
        shutil.rmtree(self._dir, ignore_errors=True)


@contextmanager
def redis_cluster(prefix: list[str]) -> Iterator[tuple[str, list[int]]]:
    """Six nodes formed into a cluster: its `redis+cluster://` URL and the nodes' pids, once every
    slot is served."""
    if shutil.which("redis-cli") is None:
        raise RuntimeError("redis-cli is not installed (apt-get install -y redis-tools)")
    with ExitStack() as stack:
        nodes = [stack.enter_context(ClusterNode(prefix)) for _ in range(CLUSTER_NODES)]
        addresses = [f"{LOOPBACK}:{node.port}" for node in nodes]
        subprocess.run(
            ["redis-cli", "--cluster", "create", *addresses, "--cluster-replicas", "1", "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=30,
        )
        deadline = time.monotonic() + 20
        while not all(_cluster_ok(node.port) for node in nodes):
            if time.monotonic() > deadline:
                raise RuntimeError("the benchmark's cluster did not reach cluster_state:ok in 20 s")
            time.sleep(0.1)
        yield "redis+cluster://" + ",".join(addresses[:2]), [node.pid for node in nodes]


def _cluster_ok(port: int) -> bool:
    client = redis.Redis(host=LOOPBACK, port=port, socket_timeout=1, decode_responses=True)
    try:
        return bool(client.cluster("info").get("cluster_state") == "ok")
    except redis.RedisError:
        return False
    finally:
        client.close()


@contextmanager
def redis_of(kind: str, prefix: list[str]) -> Iterator[tuple[str, list[int]]]:
    """A private one Redis ("single") or cluster: its URL and its server processes' pids."""
    if kind == "cluster":
        with redis_cluster(prefix) as (url, pids):
            yield url, pids
        return
    with RedisProcess(prefix) as single:
        yield single.url, [single.pid]


# -- hit path ---------------------------------------------------------------------------------------


@contextmanager
def hit_target(kind: str, near_ttl_s: float | None) -> Iterator[Target]:
    """predcache over `kind` ("single" or "cluster"), pinned with its Redis to core 0, key warm."""
    server_core, _ = core_prefixes()
    with ExitStack() as stack:
        url, redis_pids = stack.enter_context(redis_of(kind, server_core))
        args = ["--ttl", str(TTL_S), "--demo-model-latency", "0.01", "--log-level", "WARNING"]
        args += ["--redis-url", url]
        if near_ttl_s is not None:
            args += ["--near-cache-seconds", str(near_ttl_s)]
        server = stack.enter_context(
            python_server("service", *args, prefix=server_core, ready_path="/readyz")
        )
        http_get(server.url + PATH)  # the cold miss, so every measured request is a hit
        http_get(server.url + PATH)
        yield Target(server.url + PATH, (server.pid, *redis_pids))


HIT_ROWS = (
    ("single", None, "one Redis"),
    ("cluster", None, "Redis Cluster, 6 nodes"),
    ("single", 0.0, "one Redis, near-cache off (a Redis read per request)"),
    ("cluster", 0.0, "Redis Cluster, near-cache off (a Redis read per request)"),
)


def hit_path(settings: ClusterSettings) -> list[dict[str, object]]:
    if not wrk.available():
        return [{"skipped": "wrk is not installed (apt-get install -y wrk)"}]
    _, client_core = core_prefixes()
    runs: dict[int, list[Measured]] = {i: [] for i in range(len(HIT_ROWS))}
    with ExitStack() as stack:
        targets = [stack.enter_context(hit_target(kind, near)) for kind, near, _ in HIT_ROWS]
        # Round the rows in turn, so a burst of other work on the machine spreads over all of them.
        for _ in range(settings.hit_repeats):
            for i, target in enumerate(targets):
                runs[i].append(
                    measure_once(target, settings.connections, settings.hit_duration_s, client_core)
                )
    rows: list[dict[str, object]] = []
    for i, (kind, near, label) in enumerate(HIT_ROWS):
        measured = runs[i]
        rows.append(
            {
                "redis": kind,
                "near_cache": near is None,
                "label": label,
                "rps": round(statistics.median(m.run.rps for m in measured), 1),
                "p50_ms": round(statistics.median(m.run.p50_ms for m in measured), 3),
                "p99_ms": round(statistics.median(m.run.p99_ms for m in measured), 3),
                "cpu_us_per_request": round(statistics.median(m.cpu_us_per_request for m in measured), 2),
                "errors": sum(m.run.errors for m in measured),
            }
        )
    return rows


# -- stampede ---------------------------------------------------------------------------------------


@contextmanager
def fleet(kind: str, replicas: int, settings: ClusterSettings) -> Iterator[list[HttpServer]]:
    # Not pinned, as in stampede.py: this counts model calls, not CPU.
    args = [
        *("--ttl", "60", "--model", "benchmarks.models:BenchModel", "--log-level", "WARNING"),
        *("--model-timeout", str(settings.model_latency_s * 10 + 5)),
    ]
    env = {"BENCH_MODEL_LATENCY_SECONDS": str(settings.model_latency_s)}
    with ExitStack() as stack:
        url, _ = stack.enter_context(redis_of(kind, []))
        yield [
            stack.enter_context(
                python_server("service", "--redis-url", url, *args, ready_path="/readyz", env=env)
            )
            for _ in range(replicas)
        ]


def stampede_rows(settings: ClusterSettings) -> list[dict[str, object]]:
    stampede.raise_fd_limit()
    rows: list[dict[str, object]] = []
    for keys in settings.stampede_keys:
        for replicas in (1, 3):
            for kind in ("single", "cluster"):
                with fleet(kind, replicas, settings) as servers:
                    urls = [
                        f"{servers[i % len(servers)].url}/predict?pair={stampede.PAIRS[i % keys]}"
                        for i in range(settings.stampede_requests)
                    ]
                    started = time.monotonic()
                    outcomes = asyncio.run(stampede.fire(urls, settings.model_latency_s * 10 + 10))
                    wall_s = time.monotonic() - started
                    counters = stampede.fleet_counters(stampede.FLEETS[1], servers)
                rows.append(
                    {
                        "redis": kind,
                        "replicas": replicas,
                        "keys": keys,
                        "requests": settings.stampede_requests,
                        "model_calls": counters["model_calls"],
                        "outcomes": dict(sorted(outcomes.items())),
                        "wall_s": round(wall_s, 3),
                        "counters": counters,
                        "meets_target": counters["model_calls"] == keys,
                    }
                )
    return rows


def run(settings: ClusterSettings) -> dict[str, object]:
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        return {"skipped": "redis-server and redis-cli are needed"}
    return {
        "settings": {
            "connections": settings.connections,
            "hit_duration_s": settings.hit_duration_s,
            "hit_repeats": settings.hit_repeats,
            "stampede_requests": settings.stampede_requests,
            "model_latency_s": settings.model_latency_s,
            "pinned": bool(core_prefixes()[0]),
        },
        "hit_path": hit_path(settings),
        "stampede": stampede_rows(settings),
    }
