"""What each layer of predcache's hit path costs, as floor variants side by side (wrk, pinned).

`python -m benchmarks.attribution [--duration 5] [--repeats 3]`: the floor alone, with two no-op
middlewares, with per-request headers, with prometheus metrics, and predcache, taken round in turn.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Sequence
from contextlib import ExitStack

from benchmarks import wrk
from benchmarks.hitpath import DESIGNS, PATH, serving
from benchmarks.procs import core_prefixes, python_server

VARIANTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("floor", ()),
    ("floor + 2 no-op middlewares", ("--middlewares", "2")),
    ("floor + per-request headers", ("--format-headers",)),
    ("floor + prometheus counters and histogram", ("--prometheus",)),
    ("floor + all three", ("--middlewares", "2", "--format-headers", "--prometheus")),
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    server_core, client_core = core_prefixes()
    runs: dict[str, list[wrk.WrkRun]] = {}
    with ExitStack() as stack:
        urls: dict[str, str] = {}
        for label, flags in VARIANTS:
            server = python_server("benchmarks.floor_server", *flags, prefix=server_core, ready_path=PATH)
            urls[label] = stack.enter_context(server).url + PATH
        embedded = next(d for d in DESIGNS if d.key == "embedded")
        urls["predcache, embedded cache"] = stack.enter_context(serving(embedded)).url
        for url in urls.values():
            wrk.run(url, connections=10, duration_s=1.0, prefix=client_core)
        for _ in range(args.repeats):
            for label, url in urls.items():
                runs.setdefault(label, []).append(
                    wrk.run(url, connections=10, duration_s=args.duration, prefix=client_core)
                )
    floor_rps = statistics.median(r.rps for r in runs["floor"])
    print("| variant | req/s | x floor | us per request over the floor | p50 ms |")
    print("|---|---:|---:|---:|---:|")
    for label, found in runs.items():
        rps = statistics.median(r.rps for r in found)
        extra_us = (1 / rps - 1 / floor_rps) * 1e6
        p50 = statistics.median(r.p50_ms for r in found)
        print(f"| {label} | {rps:,.0f} | {rps / floor_rps:.2f}x | {extra_us:+.1f} | {p50:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
