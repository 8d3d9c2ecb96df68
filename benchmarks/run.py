"""Every benchmark in one run: `python -m benchmarks.run [--quick] [--out-dir benchmarks/results]`.

Writes bench.json (machine, versions, settings, every figure) and bench.md, and prints the Markdown.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from benchmarks import (
    cluster,
    expiry,
    failover,
    hitpath,
    llm_litellm,
    loadtest_ceiling,
    memory,
    misspath,
    report,
    stampede,
    targets,
)
from benchmarks.procs import ROOT

PACKAGES = ("aiohttp", "redis", "hiredis", "uvloop", "orjson")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _tool_version(command: Sequence[str]) -> str | None:
    if shutil.which(command[0]) is None:
        return None
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    text = (completed.stdout or completed.stderr).strip().splitlines()
    return text[0] if text else None


def _loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def machine() -> dict[str, object]:
    versions: dict[str, str] = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "kernel": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "versions": versions,
        "tools": {
            "wrk": _tool_version(["wrk", "-v"]),
            "nginx": _tool_version(["nginx", "-v"]),
            "redis-server": _tool_version(["redis-server", "--version"]),
        },
        "commit": commit,
        "loadavg_before": _loadavg(),
    }


def _timed(name: str, benchmark: Callable[[], dict[str, object]]) -> dict[str, object]:
    print(f"running {name} ...", file=sys.stderr, flush=True)
    started = time.monotonic()
    result = benchmark()
    result["elapsed_s"] = round(time.monotonic() - started, 1)
    return result


SECTIONS = (
    "hit_path",
    "stampede",
    "expiry",
    "loadtest_ceiling",
    "miss_path",
    "cluster",
    "failover",
    "memory",
    "llm_litellm",
)


def run_all(quick: bool, only: Sequence[str] = SECTIONS) -> dict[str, object]:
    if quick:
        hit = hitpath.HitPathSettings(duration_s=1.0, repeats=1, warmup_s=0.0)
        burst = stampede.StampedeSettings(requests=300, model_latency_s=0.5, trials=1)
        steady = expiry.ExpirySettings(duration_s=5.0)
        ceiling = {"duration_s": 1.0, "repeats": 1}
        misses = misspath.MissPathSettings(keys=300)
        sharded = cluster.ClusterSettings(
            hit_duration_s=1.0, hit_repeats=1, stampede_requests=300, model_latency_s=0.5
        )
        resident = memory.QUICK
    else:
        hit = hitpath.HitPathSettings()
        burst = stampede.StampedeSettings()
        steady = expiry.ExpirySettings()
        ceiling = {"duration_s": 2.0, "repeats": 3}
        misses = misspath.MissPathSettings()
        sharded = cluster.ClusterSettings()
        resident = memory.MemorySettings()
    benchmarks: dict[str, tuple[str, Callable[[], dict[str, object]]]] = {
        "hit_path": ("hit path", lambda: hitpath.run(hit)),
        "stampede": ("stampede", lambda: stampede.run(burst)),
        "expiry": ("expiry", lambda: expiry.run(steady)),
        "loadtest_ceiling": (
            "load tester ceiling",
            lambda: loadtest_ceiling.run(duration_s=ceiling["duration_s"], repeats=int(ceiling["repeats"])),
        ),
        "miss_path": ("miss path", lambda: misspath.run(misses)),
        "cluster": ("Redis Cluster beside one Redis", lambda: cluster.run(sharded)),
        "failover": ("failover under load", lambda: failover.run(failover.FailoverSettings())),
        "memory": ("memory per entry and byte bounds", lambda: memory.run(resident)),
        # About 6 minutes (LiteLLM's proxy alone takes ~40 s to start here); --quick: about 3.
        "llm_litellm": (
            "LLM gateway beside LiteLLM",
            lambda: llm_litellm.run(*((1.0, 10, 1) if quick else (3.0, 30, 3))),
        ),
    }
    started = time.monotonic()
    results: dict[str, object] = {"quick": quick, "machine": machine()}
    for name in SECTIONS:
        if name in only:
            label, benchmark = benchmarks[name]
            results[name] = _timed(label, benchmark)
    sections = {k: v for k, v in results.items() if isinstance(v, dict)}
    results["targets"] = [t.as_dict() for t in targets.evaluate(sections)]
    machine_info = results["machine"]
    assert isinstance(machine_info, dict)
    machine_info["loadavg_after"] = _loadavg()
    results["elapsed_s"] = round(time.monotonic() - started, 1)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a ~1 minute smoke run with short runs")
    parser.add_argument(
        "--only",
        action="append",
        choices=SECTIONS,
        help="run only this benchmark (repeatable), e.g. --only miss_path; default: all",
    )
    parser.add_argument(
        "--out-dir", type=Path, default=ROOT / "benchmarks" / "results", help="where bench.{json,md} go"
    )
    args = parser.parse_args(argv)
    results = run_all(args.quick, args.only or SECTIONS)
    markdown = report.markdown(results)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "bench.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out_dir / "bench.md").write_text(markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
