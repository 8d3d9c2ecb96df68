"""Miss path: 1000 distinct cold keys at concurrency 200 against a model that runs one call at a time
(20 ms + 0.5 ms per item), without and with `predict_batch`: model calls, wall time, ratio to the ideal.

`python -m benchmarks.misspath [--keys N]` prints the table; `python -m benchmarks.run` includes it.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from benchmarks.models import CALL_MS, ITEM_MS
from benchmarks.procs import ROOT, core_prefixes, http_get, python_server

# The service flags this benchmark needs; a service without them (batching not merged) is skipped.
REQUIRED_FLAGS = ("--model-max-concurrency", "--model-queue-max", "--batch-wait-ms", "--max-batch-size")
MODEL_CALLS_METRIC = "predcache_model_calls_total"
# Within this multiple of the ideal wall time, the batched run meets issue 10's target.
TARGET_RATIO = 1.25


@dataclass(frozen=True)
class MissPathSettings:
    keys: int = 1000
    concurrency: int = 200
    model_max_concurrency: int = 1  # "one call at a time"
    model_queue_max: int = 1000
    batch_wait_ms: float = 2.0
    max_batch_size: int = 32
    # The unbatched run takes keys x 20.5 ms (20.5 s for 1000) with one call at a time; the last request
    # waits for all of it, so neither the tester nor the service may time it out.
    timeout_s: float = 120.0


@dataclass(frozen=True)
class Variant:
    """One row: the model, with or without `predict_batch`."""

    key: str
    label: str
    model: str


VARIANTS = (
    Variant("unbatched", "predict only (KeyModel)", "benchmarks.models:KeyModel"),
    Variant("batched", "predict_batch (BatchedKeyModel)", "benchmarks.models:BatchedKeyModel"),
)


def ideal(settings: MissPathSettings) -> tuple[int, float]:
    """The ideal model calls and wall seconds: full batches back to back, ceil(keys / size) calls of
    CALL_MS + size x ITEM_MS each (a last partial batch counted as full, as issue 10 states it)."""
    calls = math.ceil(settings.keys / settings.max_batch_size)
    return calls, calls * (CALL_MS + settings.max_batch_size * ITEM_MS) / 1000


def missing_flags() -> list[str]:
    """The REQUIRED_FLAGS `python -m service --help` does not list."""
    completed = subprocess.run(
        [sys.executable, "-m", "service", "--help"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    return [flag for flag in REQUIRED_FLAGS if flag not in completed.stdout]


def write_inputs(path: Path, keys: int) -> None:
    """`{"key": k}` for k in 0..keys-1, one per line: every request a distinct key."""
    path.write_text("".join(f'{{"key": {k}}}\n' for k in range(keys)))


def model_calls(metrics_text: str) -> int:
    """`predcache_model_calls_total` from a /metrics scrape (summed over label sets, if any)."""
    total = 0.0
    for line in metrics_text.splitlines():
        name, _, value = line.rpartition(" ")
        if name == MODEL_CALLS_METRIC or name.startswith(MODEL_CALLS_METRIC + "{"):
            total += float(value)
    return round(total)


def measure(variant: Variant, settings: MissPathSettings) -> dict[str, object]:
    """One fresh service (embedded cache, so every key is cold) and one `python -m loadtest` run."""
    server_core, client_core = core_prefixes()
    server = python_server(
        "service", "--model", variant.model, "--log-level", "WARNING",
        "--model-max-concurrency", str(settings.model_max_concurrency),
        "--model-queue-max", str(settings.model_queue_max),
        "--batch-wait-ms", f"{settings.batch_wait_ms:g}",
        "--max-batch-size", str(settings.max_batch_size),
        "--model-timeout", f"{settings.timeout_s:g}",
        prefix=server_core, ready_path="/readyz",
    )  # fmt: skip
    with server, tempfile.TemporaryDirectory() as tmp:
        inputs, run_path = Path(tmp) / "keys.jsonl", Path(tmp) / "run.json"
        write_inputs(inputs, settings.keys)
        calls_before = model_calls(http_get(server.url + "/metrics").decode())
        command = [
            *client_core, sys.executable, "-m", "loadtest", "--url", server.url + "/predict",
            "--inputs", str(inputs), "--concurrency", str(settings.concurrency), "--n", str(settings.keys),
            "--client", "raw", "--timeout", f"{settings.timeout_s:g}s", "--no-progress",
            "--json", str(run_path),
        ]  # fmt: skip
        completed = subprocess.run(
            command, cwd=ROOT, capture_output=True, text=True, timeout=settings.timeout_s + 60, check=False
        )
        if completed.returncode not in (0, 1) or not run_path.exists():
            raise RuntimeError(f"loadtest exited {completed.returncode}: {completed.stderr.strip()}")
        calls = model_calls(http_get(server.url + "/metrics").decode()) - calls_before
        run = json.loads(run_path.read_text())
    _, ideal_wall_s = ideal(settings)
    wall_s = float(run["duration_s"])
    answered = int(run["requests"]) - int(run["errors"])
    return {
        "variant": variant.key,
        "label": variant.label,
        "model": variant.model,
        "requests": run["requests"],
        "errors": run["errors"],
        "errors_by_kind": run["errors_by_kind"],
        "classes": {name: entry["count"] for name, entry in run["classes"].items()},
        "model_calls": calls,
        "items_per_call": round(answered / calls, 2) if calls else None,
        "wall_s": round(wall_s, 3),
        "ratio_to_ideal": round(wall_s / ideal_wall_s, 3),
        "p50_ms": run["latency_ms"]["p50"],
        "p99_ms": run["latency_ms"]["p99"],
        "max_ms": run["latency_ms"]["max"],
    }


def run(settings: MissPathSettings) -> dict[str, object]:
    ideal_calls, ideal_wall_s = ideal(settings)
    section: dict[str, object] = {
        "settings": asdict(settings),
        "call_ms": CALL_MS,
        "item_ms": ITEM_MS,
        "ideal_calls": ideal_calls,
        "ideal_wall_s": round(ideal_wall_s, 3),
        "target_ratio": TARGET_RATIO,
    }
    missing = missing_flags()
    if missing:
        section["skipped"] = f"the service has no {', '.join(missing)} yet (batching not merged)"
        return section
    section["rows"] = [measure(variant, settings) for variant in VARIANTS]
    return section


def main(argv: Sequence[str] | None = None) -> int:
    from benchmarks import report

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--keys", type=int, default=MissPathSettings.keys, help="distinct cold keys")
    parser.add_argument("--json", type=Path, help="also write the section as JSON here")
    args = parser.parse_args(argv)
    section = run(MissPathSettings(keys=args.keys))
    if args.json is not None:
        args.json.write_text(json.dumps(section, indent=2) + "\n")
    print("\n".join(report.miss_path(section)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
