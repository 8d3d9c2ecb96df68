"""Memory: resident memory per cached prediction (distinct ~150-byte predictions, embedded and over
Redis with the near-cache), and the byte bounds (CACHE_MAX_BYTES, NEAR_CACHE_MAX_BYTES) held.

`python -m benchmarks.memory [--quick]` prints the tables; `python -m benchmarks.run --only memory`
includes them. `python -m benchmarks.memory --where N` shows where the bytes go (tracemalloc, in process).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import tracemalloc
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field

import aiohttp

from benchmarks.procs import HttpServer, RedisProcess, http_get, python_server

MODEL = "benchmarks.models:SizedModel"
MIB = 1024 * 1024
# Issue 21's target: a cached ~150-byte prediction costs under 1.5 KB of resident memory.
TARGET_BYTES_PER_ENTRY = 1536


@dataclass(frozen=True)
class MemorySettings:
    counts: tuple[int, ...] = (10_000, 50_000)  # distinct predictions cached, RSS read at each
    prediction_bytes: int = 150
    # Requests before the baseline is read: code paths, pools and buffers warm, as in a running service.
    warmup_keys: int = 2_000
    concurrency: int = 16
    # The bound rows: what they fill, what bound they set, the slack stated for them.
    large_prediction_bytes: int = 200_000
    large_keys: int = 1_000  # 200 MB of predictions for a 64 MiB bound
    cache_max_bytes: int = 64 * MIB
    near_max_bytes: int = 16 * MIB
    near_keys: int = 50_000
    slack_bytes: int = 16 * MIB


QUICK = MemorySettings(
    counts=(2_000, 5_000), warmup_keys=500, large_keys=400, near_keys=20_000, cache_max_bytes=32 * MIB
)


@dataclass
class Row:
    label: str
    rss_start_mib: float = 0.0
    rss_base_mib: float = 0.0
    points: list[dict[str, float]] = field(default_factory=list)
    errors: int = 0
    skipped: str | None = None


def rss_bytes(pid: int) -> int:
    """Resident memory of `pid` (Linux /proc)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


async def _fill(url: str, keys: range, concurrency: int, *, on_progress: object = None) -> int:
    """GET /predict?key=k for every k, `concurrency` at a time; the count of non-200 answers."""
    errors = 0
    pending = iter(keys)

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal errors
        for key in pending:
            async with session.get(f"{url}/predict", params={"key": str(key)}) as response:
                await response.read()
                if response.status != 200:
                    errors += 1
            if callable(on_progress):
                on_progress()

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return errors


def fill(url: str, keys: range, concurrency: int, *, on_progress: object = None) -> int:
    return asyncio.run(_fill(url, keys, concurrency, on_progress=on_progress))


def _held(server: HttpServer) -> dict[str, object]:
    """What the service says it holds (/readyz), where it says it."""
    ready = json.loads(http_get(server.url + "/readyz"))
    return {name: ready[name] for name in ("local_cache", "memory") if name in ready}


def _service(env: dict[str, str], redis_url: str | None) -> HttpServer:
    args = ["--model", MODEL, "--log-level", "WARNING"]
    if redis_url is not None:
        args += ["--redis-url", redis_url]
    return python_server("service", *args, ready_path="/readyz", env=env)


@contextmanager
def _redis_if(needed: bool) -> Iterator[str | None]:
    with ExitStack() as stack:
        yield stack.enter_context(RedisProcess()).url if needed else None


def per_entry(settings: MemorySettings, *, over_redis: bool) -> Row:
    """RSS growth per cached prediction, read after each count of distinct predictions."""
    label = "over Redis, near-cache" if over_redis else "embedded"
    most = max(settings.counts)
    env = {
        "BENCH_PREDICTION_BYTES": str(settings.prediction_bytes),
        "CACHE_TTL_SECONDS": "3600",
        # Every entry stays: bounds far above what the run fills, so nothing is evicted.
        "CACHE_MAX_ENTRIES": str(most + settings.warmup_keys),
        "CACHE_MAX_BYTES": str(1024 * MIB),
        "NEAR_CACHE_MAX_BYTES": str(1024 * MIB),
    }
    row = Row(label)
    with _redis_if(over_redis) as redis_url, _service(env, redis_url) as server:
        row.rss_start_mib = rss_bytes(server.pid) / MIB
        # Warm-up keys are negative, the measured ones 0..most-1: never the same prediction.
        for _ in range(2):
            row.errors += fill(server.url, range(-settings.warmup_keys, 0), settings.concurrency)
        time.sleep(0.5)
        base = rss_bytes(server.pid)
        row.rss_base_mib = base / MIB
        done = 0
        for count in sorted(settings.counts):
            # Computed, then read back: the near-cache keeps what this replica has read.
            row.errors += fill(server.url, range(done, count), settings.concurrency)
            row.errors += fill(server.url, range(done, count), settings.concurrency)
            done = count
            time.sleep(0.5)  # announcements and background writes settle
            grown = rss_bytes(server.pid) - base
            row.points.append(
                {"entries": count, "rss_growth_mib": grown / MIB, "bytes_per_entry": grown / count}
                | {"held": _held(server)}  # type: ignore[dict-item]
            )
    return row


def bound(
    label: str,
    settings: MemorySettings,
    env: dict[str, str],
    keys: int,
    bound_bytes: int,
    *,
    over_redis: bool,
) -> Row:
    """Fill `keys` distinct predictions under a byte bound: RSS growth over start-up, at its peak."""
    row = Row(label)
    with _redis_if(over_redis) as redis_url, _service(env, redis_url) as server:
        start = rss_bytes(server.pid)
        row.rss_start_mib = start / MIB
        peak = start
        calls = 0

        def sample() -> None:
            nonlocal peak, calls
            calls += 1
            if calls % 20 == 0:
                peak = max(peak, rss_bytes(server.pid))

        for _ in range(2):  # computed, then read back (as per_entry does)
            row.errors += fill(server.url, range(keys), settings.concurrency, on_progress=sample)
        time.sleep(0.5)
        end = rss_bytes(server.pid)
        peak = max(peak, end)
        limit = bound_bytes + settings.slack_bytes
        row.points.append(
            {
                "keys": keys,
                "bound_mib": bound_bytes / MIB,
                "slack_mib": settings.slack_bytes / MIB,
                "growth_end_mib": (end - start) / MIB,
                "growth_peak_mib": (peak - start) / MIB,
                "within": float(peak - start <= limit),
            }
            | {"held": _held(server)}  # type: ignore[dict-item]
        )
    return row


def run(settings: MemorySettings = MemorySettings()) -> dict[str, object]:
    rows = [per_entry(settings, over_redis=False), per_entry(settings, over_redis=True)]
    large = {
        "BENCH_PREDICTION_BYTES": str(settings.large_prediction_bytes),
        "CACHE_TTL_SECONDS": "3600",
        "CACHE_MAX_BYTES": str(settings.cache_max_bytes),
    }
    rows.append(
        bound(
            f"embedded, CACHE_MAX_BYTES={settings.cache_max_bytes // MIB} MiB, "
            f"{settings.large_prediction_bytes // 1000} KB predictions",
            settings,
            large,
            settings.large_keys,
            settings.cache_max_bytes,
            over_redis=False,
        )
    )
    near = {
        "BENCH_PREDICTION_BYTES": str(settings.prediction_bytes),
        "CACHE_TTL_SECONDS": "3600",
        "CACHE_MAX_ENTRIES": "1000000",
        "NEAR_CACHE_MAX_BYTES": str(settings.near_max_bytes),
    }
    rows.append(
        bound(
            f"over Redis, NEAR_CACHE_MAX_BYTES={settings.near_max_bytes // MIB} MiB, "
            f"{settings.prediction_bytes}-byte predictions",
            settings,
            near,
            settings.near_keys,
            settings.near_max_bytes,
            over_redis=True,
        )
    )
    return {"settings": asdict(settings), "rows": [asdict(row) for row in rows]}


async def _where(count: int, redis_url: str | None, prediction_bytes: int, frames: int) -> list[str]:
    """Serve in this process under tracemalloc, cache `count` predictions (computed, then read back),
    and list the lines whose allocations are still alive, per entry."""
    import os

    from aiohttp import web

    from benchmarks.models import SizedModel
    from benchmarks.procs import LOOPBACK, free_port
    from service.app import create_app
    from service.settings.config import Settings

    os.environ["BENCH_PREDICTION_BYTES"] = str(prediction_bytes)
    settings = Settings(
        redis_url=redis_url,
        ttl_s=3600,
        cache_max_entries=2 * count + 1000,
        near_max_bytes=1 << 30,
        log_level="WARNING",
    )
    app = create_app(settings, model=SizedModel())
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, LOOPBACK, port).start()
    url = f"http://{LOOPBACK}:{port}"
    try:
        for _ in range(2):
            await _fill(url, range(-1000, 0), 16)
        tracemalloc.start(frames)
        before = tracemalloc.take_snapshot()
        for _ in range(2):
            await _fill(url, range(count), 16)
        await asyncio.sleep(0.5)
        after = tracemalloc.take_snapshot()
        tracemalloc.stop()
    finally:
        await runner.cleanup()
    filters = [tracemalloc.Filter(False, tracemalloc.__file__)]
    stats = after.filter_traces(filters).compare_to(before.filter_traces(filters), "traceback")
    total = sum(stat.size_diff for stat in stats)
    lines = [f"{total / count:,.0f} bytes per entry traced by tracemalloc ({count:,} entries)"]
    for stat in stats[:15]:
        if stat.size_diff <= 0:
            break
        lines.append(f"{stat.size_diff / count:8,.0f} B/entry {stat.count_diff / count:5.2f} blocks/entry")
        lines += [f"    {frame.filename}:{frame.lineno}" for frame in stat.traceback]
    return lines


def where(count: int, *, over_redis: bool, prediction_bytes: int = 150, frames: int = 4) -> list[str]:
    with _redis_if(over_redis) as redis_url:
        return asyncio.run(_where(count, redis_url, prediction_bytes, frames))


def markdown(section: dict[str, object]) -> list[str]:
    rows = section["rows"]
    assert isinstance(rows, list)
    lines = [
        "| cache | distinct predictions | RSS growth MiB | bytes per entry | target |",
        "|---|---:|---:|---:|---|",
    ]
    for row in rows:
        for point in row["points"]:
            if "bytes_per_entry" in point:
                per = point["bytes_per_entry"]
                met = "met" if per < TARGET_BYTES_PER_ENTRY else "NOT met"
                lines.append(
                    f"| {row['label']} | {point['entries']:,} | {point['rss_growth_mib']:.1f} "
                    f"| {per:,.0f} | < {TARGET_BYTES_PER_ENTRY:,} B: {met} |"
                )
    lines += [
        "",
        "| bound | keys | growth at end MiB | at peak MiB | limit (bound + slack) MiB | held |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        for point in row["points"]:
            if "bound_mib" in point:
                limit = point["bound_mib"] + point["slack_mib"]
                held = "yes" if point["within"] else "NO"
                lines.append(
                    f"| {row['label']} | {point['keys']:,} | {point['growth_end_mib']:.1f} "
                    f"| {point['growth_peak_mib']:.1f} | {limit:.0f} | {held} |"
                )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="smaller counts, a smoke run")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    parser.add_argument(
        "--where", type=int, metavar="N", help="cache N predictions in process and show where the bytes go"
    )
    parser.add_argument("--redis", action="store_true", help="with --where: over a private Redis")
    args = parser.parse_args(argv)
    if args.where:
        print("\n".join(where(args.where, over_redis=args.redis)))
        return 0
    section = run(QUICK if args.quick else MemorySettings())
    if args.json:
        print(json.dumps(section, indent=2))
    print("\n".join(markdown(section)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
