"""Hit path: requests per second, p50 and p99 at 10 connections, with wrk, for every design.

Each server (and its Redis or nginx) runs on core 0, wrk on core 1; the key is warmed before wrk starts.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

from benchmarks import nginx, wrk
from benchmarks.procs import HttpServer, RedisProcess, core_prefixes, http_get, python_server

PATH = "/predict?pair=ETH-EUR"
# Long enough that nothing expires or refreshes during a run: this measures hits only.
TTL_S = 3600.0


@dataclass(frozen=True)
class HitPathSettings:
    connections: int = 10
    duration_s: float = 5.0
    repeats: int = 3
    warmup_s: float = 1.0


@dataclass(frozen=True)
class Design:
    """One row of the table: its key, its label, and whether it needs a Redis or nginx."""

    key: str
    label: str
    redis: bool = False
    nginx: bool = False


DESIGNS = (
    Design("floor", "(a) floor: bare aiohttp + uvloop, fixed bytes"),
    Design("embedded", "(b) predcache, embedded cache"),
    Design("redis", "(c) predcache, Redis", redis=True),
    Design("seed", "(d) seed design: GET per request, JSON re-encoded", redis=True),
    Design("nginx", "(e) nginx proxy_cache + lock in front of the seed", redis=True, nginx=True),
)


@contextmanager
def serving(design: Design) -> Iterator[str]:
    """Start `design` pinned to core 0 and yield the URL wrk should load, with the key warmed."""
    server_core, _ = core_prefixes()
    with ExitStack() as stack:
        redis_url = ""
        if design.redis:
            redis_url = stack.enter_context(RedisProcess(server_core)).url
        server: HttpServer
        if design.key == "floor":
            server = python_server("benchmarks.floor_server", prefix=server_core, ready_path=PATH)
        elif design.key in ("embedded", "redis"):
            args = ["--ttl", str(TTL_S), "--demo-model-latency", "0.01", "--log-level", "WARNING"]
            if redis_url:
                args += ["--redis-url", redis_url]
            server = python_server("service", *args, prefix=server_core, ready_path="/readyz")
        else:
            server = python_server(
                "benchmarks.seed_server", "--redis-url", redis_url, "--ttl", str(TTL_S),
                "--model-latency", "0.01", prefix=server_core, ready_path="/calls",
            )  # fmt: skip
        stack.enter_context(server)
        url = server.url
        if design.nginx:
            url = stack.enter_context(nginx.Nginx(server.port, prefix=server_core, ready_path="/calls")).url
        http_get(url + PATH)  # the cold miss, so every measured request is a hit
        http_get(url + PATH)
        yield url + PATH


def _summary(design: Design, runs: list[wrk.WrkRun]) -> dict[str, object]:
    return {
        "design": design.key,
        "label": design.label,
        "rps": round(statistics.median(r.rps for r in runs), 1),
        "p50_ms": round(statistics.median(r.p50_ms for r in runs), 3),
        "p99_ms": round(statistics.median(r.p99_ms for r in runs), 3),
        "errors": sum(r.errors for r in runs),
        "runs": [{"rps": r.rps, "p50_ms": r.p50_ms, "p99_ms": r.p99_ms, "errors": r.errors} for r in runs],
    }


def run(settings: HitPathSettings) -> dict[str, object]:
    if not wrk.available():
        return {"skipped": "wrk is not installed (apt-get install -y wrk)"}
    _, client_core = core_prefixes()
    designs = [d for d in DESIGNS if not d.nginx or nginx.available()]
    runs: dict[str, list[wrk.WrkRun]] = {d.key: [] for d in designs}
    with ExitStack() as stack:
        # Every design is up for the whole benchmark and the repeats go round the designs in turn, so
        # a burst of other work on the machine spreads over all rows instead of skewing one.
        urls = {d.key: stack.enter_context(serving(d)) for d in designs}
        for url in urls.values():
            if settings.warmup_s > 0:
                wrk.run(
                    url, connections=settings.connections, duration_s=settings.warmup_s, prefix=client_core
                )
        for _ in range(settings.repeats):
            for key, url in urls.items():
                runs[key].append(
                    wrk.run(
                        url,
                        connections=settings.connections,
                        duration_s=settings.duration_s,
                        prefix=client_core,
                    )
                )
    rows: list[dict[str, object]] = []
    for design in DESIGNS:
        if design.key in runs:
            rows.append(_summary(design, runs[design.key]))
        else:
            rows.append({"design": design.key, "label": design.label, "skipped": "nginx is not installed"})
    floor = rows[0]
    for row in rows:
        if "rps" in row and "rps" in floor:
            row["rps_ratio_to_floor"] = round(float(str(row["rps"])) / float(str(floor["rps"])), 3)
    return {
        "connections": settings.connections,
        "duration_s": settings.duration_s,
        "repeats": settings.repeats,
        "warmup_s": settings.warmup_s,
        "pinned": bool(core_prefixes()[0]),
        "rows": rows,
    }
