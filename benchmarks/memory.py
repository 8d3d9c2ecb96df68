"""Memory: resident memory per cached prediction (distinct ~150-byte ones, embedded and over Redis
with the near-cache), and the byte bounds CACHE_MAX_BYTES and NEAR_CACHE_MAX_BYTES as resident memory.

`python -m benchmarks.memory [--quick]` prints the tables (a few minutes; --quick about a third);
`python -m benchmarks.run --only memory` includes them. `python -m benchmarks.memory --where N
[--redis]` caches N predictions in process and lists what is still allocated for them (tracemalloc).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
import tracemalloc
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass

import aiohttp

from benchmarks.procs import LOOPBACK, HttpServer, RedisProcess, free_port, http_get, python_server

MODEL = "benchmarks.models:SizedModel"
MIB = 1024 * 1024
# Issue 21's target: a cached ~150-byte prediction costs under 1.5 KB of resident memory.
TARGET_BYTES_PER_ENTRY = 1536


@dataclass(frozen=True)
class MemorySettings:
    counts: tuple[int, ...] = (10_000, 50_000)  # distinct predictions cached, RSS read at each
    prediction_bytes: int = 150
    # Predictions cached before the baseline is read: code paths, pools and buffers warm. Few, so
    # that the fixed-size memos (inputs, hit headers: 4,096 entries each) fill after the baseline
    # and count in the figure per entry.
    warmup_keys: int = 500
    concurrency: int = 16
    # The bound rows: CACHE_MAX_BYTES with large predictions (the embedded cache), and
    # NEAR_CACHE_MAX_BYTES with small ones (where bookkeeping outweighs the bodies), each filled
    # with about three times what its bound holds.
    large_prediction_bytes: int = 200_000
    large_keys: int = 1_000
    cache_max_bytes: int = 64 * MIB
    near_max_bytes: int = 16 * MIB
    near_keys: int = 50_000
    # The slack stated for a bound: the input memo (MEMO_MAX_BYTES, 8 MiB), the hit-header memo (4,096
    # entries, about 3 MiB) and what the allocators keep of freed memory.
    slack_bytes: int = 16 * MIB


QUICK = MemorySettings(
    counts=(10_000,), warmup_keys=200, large_keys=500, cache_max_bytes=32 * MIB, near_keys=20_000
)


def rss_bytes(pid: int) -> int:
    """Resident memory of `pid` (Linux /proc)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


async def _fill(url: str, keys: range, concurrency: int, on_each: Callable[[], None] | None = None) -> int:
    """GET /predict?key=k for every k, `concurrency` at a time; the count of non-200 answers."""
    errors = 0
    pending = iter(keys)

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal errors
        for key in pending:
            async with session.get(f"{url}/predict", params={"key": str(key)}) as response:
                await response.read()
                errors += response.status != 200
            if on_each is not None:
                on_each()

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return errors


def cache_twice(url: str, keys: range, concurrency: int, on_each: Callable[[], None] | None = None) -> int:
    """Each key computed, then read back (the near-cache keeps what this replica has read)."""
    return sum(asyncio.run(_fill(url, keys, concurrency, on_each)) for _ in range(2))


def _held(server: HttpServer) -> dict[str, int]:
    """What the service says it holds (/readyz): copies, and bytes as its bounds count them."""
    ready = json.loads(http_get(server.url + "/readyz"))
    held = {"near_copies": int(ready.get("local_cache", {}).get("entries", 0))}
    return held | {name: int(value) for name, value in ready.get("memory", {}).items()}


@contextmanager
def _service(env: dict[str, str], over_redis: bool) -> Iterator[HttpServer]:
    """The service with SizedModel, embedded or over a private redis-server."""
    with ExitStack() as stack:
        args = ["--model", MODEL, "--log-level", "WARNING"]
        if over_redis:
            args += ["--redis-url", stack.enter_context(RedisProcess()).url]
        yield stack.enter_context(python_server("service", *args, ready_path="/readyz", env=env))


def _cache_name(over_redis: bool) -> str:
    return "over Redis, near-cache" if over_redis else "embedded"


def per_entry(settings: MemorySettings, *, over_redis: bool) -> list[dict[str, object]]:
    """RSS growth per cached prediction, read after each count of distinct predictions."""
    most = max(settings.counts) + settings.warmup_keys
    env = {
        "BENCH_PREDICTION_BYTES": str(settings.prediction_bytes),
        "CACHE_TTL_SECONDS": "3600",
        # Bounds far above what the run caches: every prediction stays.
        "CACHE_MAX_ENTRIES": str(most),
        "CACHE_MAX_BYTES": str(1024 * MIB),
        "NEAR_CACHE_MAX_BYTES": str(1024 * MIB),
    }
    rows: list[dict[str, object]] = []
    with _service(env, over_redis) as server:
        # Warm-up keys are negative, the measured ones 0..: never the same prediction.
        errors = cache_twice(server.url, range(-settings.warmup_keys, 0), settings.concurrency)
        time.sleep(0.5)
        base = rss_bytes(server.pid)
        done = 0
        for count in sorted(settings.counts):
            errors += cache_twice(server.url, range(done, count), settings.concurrency)
            done = count
            time.sleep(0.5)  # announcements and writes settle
            grown = rss_bytes(server.pid) - base
            rows.append(
                {
                    "kind": "per_entry",
                    "cache": _cache_name(over_redis),
                    "entries": count,
                    "rss_base_mib": round(base / MIB, 1),
                    "rss_growth_mib": round(grown / MIB, 1),
                    "bytes_per_entry": round(grown / count),
                    "errors": errors,
                    **_held(server),
                }
            )
    return rows


def bound(
    settings: MemorySettings,
    *,
    setting: str,
    bound_bytes: int,
    prediction_bytes: int,
    keys: int,
    over_redis: bool,
) -> dict[str, object]:
    """Cache `keys` distinct predictions under `setting`=`bound_bytes`: RSS growth over start-up,
    at the end and at its peak (sampled every 20 requests)."""
    env = {
        "BENCH_PREDICTION_BYTES": str(prediction_bytes),
        "CACHE_TTL_SECONDS": "3600",
        "CACHE_MAX_ENTRIES": "1000000",  # the byte bound is what binds
        setting: str(bound_bytes),
    }
    with _service(env, over_redis) as server:
        start = peak = rss_bytes(server.pid)
        requests = 0

        def sample() -> None:
            nonlocal peak, requests
            requests += 1
            if requests % 20 == 0:
                peak = max(peak, rss_bytes(server.pid))

        errors = cache_twice(server.url, range(keys), settings.concurrency, sample)
        time.sleep(0.5)
        end = rss_bytes(server.pid)
        peak = max(peak, end)
        return {
            "kind": "bound",
            "cache": _cache_name(over_redis),
            "setting": setting,
            "bound_mib": bound_bytes / MIB,
            "prediction_bytes": prediction_bytes,
            "keys": keys,
            "rss_start_mib": round(start / MIB, 1),
            "growth_end_mib": round((end - start) / MIB, 1),
            "growth_peak_mib": round((peak - start) / MIB, 1),
            "slack_mib": settings.slack_bytes / MIB,
            "within": peak - start <= bound_bytes + settings.slack_bytes,
            "errors": errors,
            **_held(server),
        }


def run(settings: MemorySettings) -> dict[str, object]:
    rows = [*per_entry(settings, over_redis=False), *per_entry(settings, over_redis=True)]
    rows.append(
        bound(
            settings,
            setting="CACHE_MAX_BYTES",
            bound_bytes=settings.cache_max_bytes,
            prediction_bytes=settings.large_prediction_bytes,
            keys=settings.large_keys,
            over_redis=False,
        )
    )
    rows.append(
        bound(
            settings,
            setting="NEAR_CACHE_MAX_BYTES",
            bound_bytes=settings.near_max_bytes,
            prediction_bytes=settings.prediction_bytes,
            keys=settings.near_keys,
            over_redis=True,
        )
    )
    return {"settings": asdict(settings), "rows": rows}


def markdown(section: Mapping[str, object]) -> list[str]:
    rows = section["rows"]
    assert isinstance(rows, list)
    lines = [
        "| cache | distinct predictions | RSS growth MiB | bytes per entry | near copies | target |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        if row["kind"] == "per_entry":
            met = "met" if row["bytes_per_entry"] < TARGET_BYTES_PER_ENTRY else "NOT met"
            lines.append(
                f"| {row['cache']} | {row['entries']:,} | {row['rss_growth_mib']:.1f} "
                f"| {row['bytes_per_entry']:,} | {row['near_copies']:,} "
                f"| < {TARGET_BYTES_PER_ENTRY:,} B: {met} |"
            )
    lines += [
        "",
        "| bound | predictions | growth at end MiB | at peak MiB | bound + slack MiB | held |",
        "|---|---|---:|---:|---:|---|",
    ]
    for row in rows:
        if row["kind"] == "bound":
            lines.append(
                f"| {row['cache']}, {row['setting']}={row['bound_mib']:g} MiB "
                f"| {row['keys']:,} x {row['prediction_bytes']:,} B | {row['growth_end_mib']:.1f} "
                f"| {row['growth_peak_mib']:.1f} | {row['bound_mib'] + row['slack_mib']:g} "
                f"| {'yes' if row['within'] else 'NO'} |"
            )
    settings = section["settings"]
    assert isinstance(settings, Mapping)
    lines += [
        "",
        f"Resident memory (VmRSS) of the service process. Per entry: growth over a baseline read after "
        f"{settings['warmup_keys']:,} predictions, divided by the predictions cached since, each computed "
        f"then read back, every one kept (bounds far above the run). Bounds: growth over the start-up "
        f"size, each prediction computed then read back; the slack covers the fixed-size memos and "
        f"what the allocators keep.",
    ]
    return lines


async def _where(count: int, redis_url: str | None, frames: int) -> list[str]:
    """Serve in this process under tracemalloc, cache `count` predictions (computed, then read back)
    and list the allocations still alive, grouped by where they were made."""
    from aiohttp import web

    from benchmarks.models import SizedModel
    from service.app import create_app
    from service.settings.config import Settings

    settings = Settings(
        redis_url=redis_url,
        ttl_s=3600,
        cache_max_entries=2 * count + 1000,
        cache_max_bytes=1 << 30,
        near_max_bytes=1 << 30,
        log_level="WARNING",
    )
    runner = web.AppRunner(create_app(settings, model=SizedModel()), access_log=None)
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
    stats = after.compare_to(before, "traceback")
    total = sum(stat.size_diff for stat in stats)
    lines = [f"{total / count:,.0f} bytes per entry still allocated ({count:,} entries)"]
    for stat in stats[:15]:
        if stat.size_diff <= 0:
            break
        lines.append(
            f"{stat.size_diff / count:8,.0f} B/entry in {stat.count_diff / count:4.2f} blocks, from:"
        )
        lines += [f"    {frame.filename}:{frame.lineno}" for frame in stat.traceback]
    return lines


def where(count: int, *, over_redis: bool, prediction_bytes: int = 150, frames: int = 4) -> list[str]:
    os.environ["BENCH_PREDICTION_BYTES"] = str(prediction_bytes)
    with ExitStack() as stack:
        redis_url = stack.enter_context(RedisProcess()).url if over_redis else None
        return asyncio.run(_where(count, redis_url, frames))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="smaller counts: a smoke run")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON as well")
    parser.add_argument("--where", type=int, metavar="N", help="show where N cached predictions' bytes go")
    parser.add_argument("--redis", action="store_true", help="with --where: over a private redis-server")
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
