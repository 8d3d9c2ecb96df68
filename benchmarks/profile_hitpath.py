"""Where a predcache hit spends its time: py-spy samples the service while wrk loads the hit path.

`python -m benchmarks.profile_hitpath [--redis | --post] [--seconds 8]`; py-spy comes from PATH or
`uvx py-spy`.
Prints the functions with the most samples, by own time and by time including callees.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import threading
from collections import Counter
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

from benchmarks import wrk
from benchmarks.hitpath import DESIGNS, serving
from benchmarks.procs import core_prefixes


def py_spy_command() -> list[str]:
    if shutil.which("py-spy"):
        return ["py-spy"]
    if shutil.which("uvx"):
        return ["uvx", "py-spy"]
    raise RuntimeError("py-spy is not available: pip install py-spy, or install uv for uvx")


def package_of(frame: str) -> str:
    """`fn (aiohttp/web_response.py)` -> `aiohttp`: the top-level package a frame's file belongs to."""
    location = frame.rpartition("(")[2].rstrip(")")
    return location.split("/", 1)[0] if "/" in location else location.split(":", 1)[0]


def top_functions(
    collapsed: str, limit: int
) -> tuple[list[tuple[str, int]], list[tuple[str, int]], list[tuple[str, int]], int]:
    """(own samples, inclusive samples, own samples per package, total) from py-spy's collapsed stacks."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        own[frames[-1]] += count
        packages[package_of(frames[-1])] += count
        for frame in set(frames):
            inclusive[frame] += count
    return own.most_common(limit), inclusive.most_common(limit), packages.most_common(limit), total


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--redis", action="store_true", help="profile the Redis mode, not the embedded cache")
    parser.add_argument("--post", action="store_true", help="profile POST /predict (embedded cache)")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--svg", type=Path, help="also write a flame graph here")
    args = parser.parse_args(argv)
    key = "redis" if args.redis else "post" if args.post else "embedded"
    design = next(d for d in DESIGNS if d.key == key)
    _, client_core = core_prefixes()
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        target = stack.enter_context(serving(design))
        url = target.url
        pid = target.pids[-1]
        load = threading.Thread(
            target=wrk.run,
            args=(url,),
            kwargs={
                "connections": 10,
                "duration_s": args.seconds + 3,
                "prefix": client_core,
                "json_body": target.json_body,
            },
        )
        load.start()
        collapsed_path = Path(tmp) / "stacks.txt"
        record = [*py_spy_command(), "record", "--pid", str(pid), "--duration", f"{args.seconds:g}"]
        record += ["--rate", "250", "--nonblocking", "--function"]
        subprocess.run([*record, "--format", "raw", "--output", str(collapsed_path)], check=True)
        load.join()
        if args.svg is not None:
            subprocess.run([*record, "--output", str(args.svg)], check=False)
        own, inclusive, packages, total = top_functions(collapsed_path.read_text(), args.top)
    print(f"{total} samples of {design.label}\n\nown time per package:")
    for package, count in packages:
        print(f"  {count / total:6.1%}  {package}")
    print("\nown time:")
    for frame, count in own:
        print(f"  {count / total:6.1%}  {frame}")
    print("\nincluding callees:")
    for frame, count in inclusive:
        print(f"  {count / total:6.1%}  {frame}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
