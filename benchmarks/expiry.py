"""Expiry under steady open-loop load: TTL 1 s, model 0.3 s, 200 req/s, with `python -m loadtest --rate`.

Who waits for the model when a key expires: the seed's design (one unlucky request per expiry, and any
that arrive while it computes) against predcache (stale while one refresh runs, or refreshed early).
"""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from benchmarks.procs import RedisProcess, core_prefixes, http_get, python_server

PAIR = "ETH-EUR"
WAITING_CLASSES = frozenset({"MISS", "collapsed"})


@dataclass(frozen=True)
class ExpirySettings:
    ttl_s: float = 1.0
    model_latency_s: float = 0.3
    rate: float = 200.0
    duration_s: float = 30.0
    connections: int = 100
    # Longer than this counts as having waited for the model (its latency is 0.3 s).
    waited_threshold_ms: float = 250.0


SYSTEMS = (("seed", "seed design"), ("predcache", "predcache, Redis"))


@contextmanager
def serving(system: str, settings: ExpirySettings) -> Iterator[str]:
    server_core, _ = core_prefixes()
    with ExitStack() as stack:
        redis_url = stack.enter_context(RedisProcess(server_core)).url
        if system == "seed":
            server = python_server(
                "benchmarks.seed_server", "--redis-url", redis_url, "--ttl", str(settings.ttl_s),
                "--model-latency", str(settings.model_latency_s), prefix=server_core, ready_path="/calls",
            )  # fmt: skip
        else:
            server = python_server(
                "service", "--redis-url", redis_url, "--ttl", str(settings.ttl_s),
                "--demo-model-latency", str(settings.model_latency_s), "--log-level", "WARNING",
                prefix=server_core, ready_path="/readyz",
            )  # fmt: skip
        stack.enter_context(server)
        url = server.url + "/predict"
        http_get(f"{url}?pair={PAIR}")  # the one cold miss is warm-up, not expiry
        yield url


def _percentile(ordered: list[float], fraction: float) -> float | None:
    """The nearest-rank percentile of an ascending list."""
    if not ordered:
        return None
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def measure(system: str, label: str, settings: ExpirySettings) -> dict[str, object]:
    _, client_core = core_prefixes()
    with serving(system, settings) as url, tempfile.TemporaryDirectory() as tmp:
        run_path, csv_path = Path(tmp) / "run.json", Path(tmp) / "requests.csv"
        command = [
            *client_core, sys.executable, "-m", "loadtest", "--url", url, "--pair", PAIR,
            "--rate", f"{settings.rate:g}", "--duration", f"{settings.duration_s:g}s",
            "-c", str(settings.connections), "--warmup", "20", "--no-progress",
            "--json", str(run_path), "--csv", str(csv_path),
        ]  # fmt: skip
        subprocess.run(command, check=True, capture_output=True, timeout=settings.duration_s + 60)
        run = json.loads(run_path.read_text())
        with csv_path.open(newline="") as file:
            rows = list(csv.DictReader(file))
    threshold = settings.waited_threshold_ms
    slow = sum(1 for r in rows if float(r["latency_ms"]) > threshold)
    # Measured from the actual send: a request slow here was slow at the server; one slow only from its
    # due time was sent late, because the load generator itself was held up (coordinated omission).
    slow_at_server = sum(1 for r in rows if float(r["uncorrected_latency_ms"]) > threshold)
    slowest = sorted(rows, key=lambda r: float(r["latency_ms"]), reverse=True)[:10]
    uncorrected = sorted(float(r["uncorrected_latency_ms"]) for r in rows)
    waiting_class = sum(1 for r in rows if r["class"] in WAITING_CLASSES)
    waited = sum(
        1
        for r in rows
        if float(r["latency_ms"]) > settings.waited_threshold_ms or r["class"] in WAITING_CLASSES
    )
    latency = run["latency_ms"]
    return {
        "system": system,
        "label": label,
        "requests": run["requests"],
        "errors": run["errors"],
        "throughput_rps": round(float(run["throughput_rps"]), 1),
        "p50_ms": latency["p50"],
        "p99_ms": latency["p99"],
        "p999_ms": latency["p999"],
        "max_ms": latency["max"],
        # From the actual send: what the server added, without the load generator's own hiccups.
        "p99_uncorrected_ms": _percentile(uncorrected, 0.99),
        "p999_uncorrected_ms": _percentile(uncorrected, 0.999),
        "max_uncorrected_ms": uncorrected[-1] if uncorrected else None,
        "classes": {name: c["count"] for name, c in run["classes"].items()},
        # The same run's HIT class: the hit path's p99 at this load, a stricter yardstick for p99.9.
        "hit_class_p99_ms": run["classes"].get("HIT", {}).get("latency_ms", {}).get("p99"),
        "slow_requests": slow,
        "slow_at_server_requests": slow_at_server,
        "slowest": [
            {
                "due_ms": float(r["intended_start_ms"]),
                "late_start_ms": round(float(r["actual_start_ms"]) - float(r["intended_start_ms"]), 3),
                "latency_ms": float(r["latency_ms"]),
                "uncorrected_latency_ms": float(r["uncorrected_latency_ms"]),
                "class": r["class"],
            }
            for r in slowest
        ],
        "miss_class_requests": waiting_class,
        "waited_requests": waited,
        "waited_share": round(waited / len(rows), 5) if rows else None,
    }


def run(settings: ExpirySettings) -> dict[str, object]:
    return {
        "ttl_s": settings.ttl_s,
        "model_latency_s": settings.model_latency_s,
        "rate": settings.rate,
        "duration_s": settings.duration_s,
        "connections": settings.connections,
        "waited_threshold_ms": settings.waited_threshold_ms,
        "pinned": bool(core_prefixes()[0]),
        "rows": [measure(system, label, settings) for system, label in SYSTEMS],
    }
