"""What each layer of predcache's hit path costs, as floor variants side by side (wrk, pinned).

`python -m benchmarks.attribution [--duration 3] [--repeats 3]`: the floor alone, with two no-op
middlewares, with per-request headers, with prometheus metrics, and predcache (GET with the embedded
cache and over Redis, POST), in CPU time per request.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Sequence
from contextlib import ExitStack

from benchmarks.hitpath import DESIGNS, PATH, POST_BODY, Measured, Target, measure_once, serving
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
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    server_core, client_core = core_prefixes()
    runs: dict[str, list[Measured]] = {}
    with ExitStack() as stack:
        targets: dict[str, Target] = {}
        for label, flags in VARIANTS:
            server = stack.enter_context(
                python_server("benchmarks.floor_server", *flags, prefix=server_core, ready_path=PATH)
            )
            targets[label] = Target(server.url + PATH, (server.pid,))
            if not flags:
                targets["floor, POST (the body read, nothing else)"] = Target(
                    server.url + "/predict", (server.pid,), POST_BODY
                )
        for key, label in (
            ("embedded", "predcache, embedded cache"),
            ("redis", "predcache, Redis (near-cache)"),
            ("post", "predcache, embedded cache, POST"),
        ):
            targets[label] = stack.enter_context(serving(next(d for d in DESIGNS if d.key == key)))
        for target in targets.values():
            measure_once(target, 10, 1.0, client_core)
        for _ in range(args.repeats):
            for label, target in targets.items():
                runs.setdefault(label, []).append(measure_once(target, 10, args.duration, client_core))
    floor_us = statistics.median(m.cpu_us_per_request for m in runs["floor"])
    print("| variant | CPU us/req | over the floor | x floor by CPU | req/s (noisy) | p50 ms |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, found in runs.items():
        us = statistics.median(m.cpu_us_per_request for m in found)
        rps = statistics.median(m.run.rps for m in found)
        p50 = statistics.median(m.run.p50_ms for m in found)
        print(
            f"| {label} | {us:.1f} | {us - floor_us:+.1f} | {floor_us / us:.2f}x | {rps:,.0f} | {p50:.3f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
