"""Hit path: requests per second, p50 and p99 at 10 connections, with wrk, for every design.

Each server (and its Redis or nginx) runs on core 0, wrk on core 1; the key is warmed before wrk starts.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

from benchmarks import nginx, wrk
from benchmarks.procs import HttpServer, RedisProcess, core_prefixes, http_get, python_server, tree_cpu_s

PATH = "/predict?pair=ETH-EUR"
# The same input as a JSON body: POST shares GET's cache entry.
POST_BODY = b'{"pair": "ETH-EUR"}'
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
    post: bool = False  # POST /predict with POST_BODY rather than GET PATH


DESIGNS = (
    Design("floor", "(a) floor: bare aiohttp + uvloop, fixed bytes"),
    Design("embedded", "(b) predcache, embedded cache"),
    Design("post", "(b2) predcache, embedded cache, POST /predict", post=True),
    Design("redis", "(c) predcache, Redis", redis=True),
    Design("seed", "(d) seed design: GET per request, JSON re-encoded", redis=True),
    Design("nginx", "(e) nginx proxy_cache + lock in front of the seed", redis=True, nginx=True),
)


@dataclass(frozen=True)
class Target:
    """A running design: the URL wrk loads and the processes whose CPU time each request costs."""

    url: str
    pids: tuple[int, ...]
    json_body: bytes | None = None  # POST it rather than GET


@dataclass(frozen=True)
class Measured:
    """One wrk run and the CPU time the design's processes used during it."""

    run: wrk.WrkRun
    cpu_s: float

    @property
    def cpu_us_per_request(self) -> float:
        return self.cpu_s / max(1, self.run.requests) * 1e6


def measure_once(target: Target, connections: int, duration_s: float, prefix: list[str]) -> Measured:
    before = tree_cpu_s(target.pids)
    run = wrk.run(
        target.url, connections=connections, duration_s=duration_s, prefix=prefix, json_body=target.json_body
    )
    return Measured(run, tree_cpu_s(target.pids) - before)


@contextmanager
def serving(design: Design) -> Iterator[Target]:
    """Start `design` pinned to core 0 and yield what wrk should load, with the key warmed."""
    server_core, _ = core_prefixes()
    with ExitStack() as stack:
        redis_url = ""
        pids: list[int] = []
        if design.redis:
            redis = stack.enter_context(RedisProcess(server_core))
            redis_url = redis.url
            pids.append(redis.pid)
        server: HttpServer
        if design.key == "floor":
            server = python_server("benchmarks.floor_server", prefix=server_core, ready_path=PATH)
        elif design.key in ("embedded", "post", "redis"):
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
        pids.append(server.pid)
        url = server.url
        if design.nginx:
            proxy = stack.enter_context(nginx.Nginx(server.port, prefix=server_core, ready_path="/calls"))
            url = proxy.url
            pids.append(proxy.server.pid)
        http_get(url + PATH)  # the cold miss, so every measured request is a hit
        http_get(url + PATH)
        if design.post:
            yield Target(url + "/predict", tuple(pids), POST_BODY)
        else:
            yield Target(url + PATH, tuple(pids))


def _summary(design: Design, measured: list[Measured]) -> dict[str, object]:
    runs = [m.run for m in measured]
    return {
        "design": design.key,
        "label": design.label,
        "rps": round(statistics.median(r.rps for r in runs), 1),
        "p50_ms": round(statistics.median(r.p50_ms for r in runs), 3),
        "p99_ms": round(statistics.median(r.p99_ms for r in runs), 3),
        "cpu_us_per_request": round(statistics.median(m.cpu_us_per_request for m in measured), 2),
        # The share of a core the design got while wrk ran: well under 1 means other work took it.
        "cpu_share": round(statistics.median(m.cpu_s / max(m.run.duration_s, 1e-9) for m in measured), 3),
        "errors": sum(r.errors for r in runs),
        "runs": [
            {
                "rps": m.run.rps, "p50_ms": m.run.p50_ms, "p99_ms": m.run.p99_ms,
                "errors": m.run.errors, "cpu_s": round(m.cpu_s, 3),
            }
            for m in measured
        ],
    }  # fmt: skip


def run(settings: HitPathSettings) -> dict[str, object]:
    if not wrk.available():
        return {"skipped": "wrk is not installed (apt-get install -y wrk)"}
    _, client_core = core_prefixes()
    designs = [d for d in DESIGNS if not d.nginx or nginx.available()]
    runs: dict[str, list[Measured]] = {d.key: [] for d in designs}
    with ExitStack() as stack:
        # Every design is up for the whole benchmark and the repeats go round the designs in turn, so
        # a burst of other work on the machine spreads over all rows instead of skewing one.
        targets = {d.key: stack.enter_context(serving(d)) for d in designs}
        for target in targets.values():
            if settings.warmup_s > 0:
                measure_once(target, settings.connections, settings.warmup_s, client_core)
        for _ in range(settings.repeats):
            for key, target in targets.items():
                runs[key].append(measure_once(target, settings.connections, settings.duration_s, client_core))
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
            row["p50_ratio_to_floor"] = round(float(str(row["p50_ms"])) / float(str(floor["p50_ms"])), 3)
            # Requests per CPU-second relative to the floor's: what the rps ratio would be with a core
            # to itself, and much steadier than the rps ratio when other work shares the machine.
            row["cpu_ratio_to_floor"] = round(
                float(str(floor["cpu_us_per_request"])) / float(str(row["cpu_us_per_request"])), 3
            )
    return {
        "connections": settings.connections,
        "duration_s": settings.duration_s,
        "repeats": settings.repeats,
        "warmup_s": settings.warmup_s,
        "pinned": bool(core_prefixes()[0]),
        "rows": rows,
    }
