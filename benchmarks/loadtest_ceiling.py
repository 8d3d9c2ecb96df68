"""How fast is the load tester itself? wrk and `python -m loadtest` against the same trivial server.

Target (issue 3): at least 60% of wrk's request rate, and a p50 within 0.2 ms of wrk's, for the default
client (`raw` for http://); `--client aiohttp` is measured beside it for comparison.
Usage: `uv run --frozen python benchmarks/loadtest_ceiling.py [--json PATH]`; `run()` returns the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

MIN_RATE_RATIO = 0.6
MAX_P50_DELTA_MS = 0.2
# (name, connections): one run where the server is the limit, one that measures round-trip latency.
SCENARIOS: tuple[tuple[str, int], ...] = (("throughput", 10), ("latency", 1))
# The loadtest clients measured; the target applies to the first, the default for http:// URLs.
CLIENTS: tuple[str, ...] = ("raw", "aiohttp")

_SERVER_CODE = """
import socket, sys
from aiohttp import web
try:
    import uvloop
    loop = uvloop.new_event_loop()
except ImportError:
    import asyncio
    loop = asyncio.new_event_loop()
BODY = b'{"pair":"ETH-EUR","predicted_price":3021.5}'
async def predict(request):
    return web.Response(body=BODY, content_type="application/json", headers={"X-Cache": "HIT"})
app = web.Application()
app.router.add_get("/predict", predict)
sock = socket.socket(fileno=int(sys.argv[1]))
web.run_app(app, sock=sock, access_log=None, print=None, loop=loop)
"""


def _cpus() -> tuple[list[str], list[str]]:
    """taskset prefixes putting the server and the client on different cores, when possible."""
    taskset = shutil.which("taskset")
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if taskset is None or len(cpus) < 2:
        return [], []
    return [taskset, "-c", str(cpus[0])], [taskset, "-c", str(cpus[1])]


def _wait_ready(port: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as conn:
                conn.sendall(b"GET /predict HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                if conn.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"the benchmark server did not answer on port {port}")


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def _run_wrk(prefix: list[str], url: str, connections: int, duration_s: float) -> tuple[float, float]:
    command = [*prefix, "wrk", "-t1", f"-c{connections}", f"-d{duration_s:g}s", "--latency", url]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    rate = re.search(r"Requests/sec:\s+([0-9.]+)", out)
    p50 = re.search(r"50%\s+([0-9.]+)(us|ms|s)", out)
    if rate is None or p50 is None:
        raise RuntimeError(f"could not read wrk's output:\n{out}")
    return float(rate[1]), _ms(p50[1], p50[2])


def _run_loadtest(
    prefix: list[str], url: str, connections: int, duration_s: float, client: str
) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "run.json"
        command = [
            *prefix, sys.executable, "-m", "loadtest", "--url", url, "--pair", "ETH-EUR",
            "-c", str(connections), "-z", f"{duration_s:g}s", "--warmup", "200",
            "--client", client, "--no-progress", "--json", str(path),
        ]  # fmt: skip
        subprocess.run(command, check=True, capture_output=True)
        run = json.loads(path.read_text())
    return float(run["throughput_rps"]), float(run["latency_ms"]["p50"])


def run(*, duration_s: float = 2.0, repeats: int = 3) -> dict[str, object]:
    """Benchmark both tools; the median of `repeats` runs per tool and scenario."""
    if shutil.which("wrk") is None:
        return {"skipped": "wrk is not installed (apt-get install -y wrk)"}
    server_prefix, client_prefix = _cpus()
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1024)
    port = listener.getsockname()[1]
    server = subprocess.Popen(
        [*server_prefix, sys.executable, "-c", _SERVER_CODE, str(listener.fileno())],
        pass_fds=(listener.fileno(),),
    )
    listener.close()
    url = f"http://127.0.0.1:{port}/predict?pair=ETH-EUR"
    scenarios: list[dict[str, object]] = []
    try:
        _wait_ready(port)
        for name, connections in SCENARIOS:
            wrk = [_run_wrk(client_prefix, url, connections, duration_s) for _ in range(repeats)]
            wrk_rps, wrk_p50 = statistics.median(r for r, _ in wrk), statistics.median(p for _, p in wrk)
            scenario: dict[str, object] = {
                "scenario": name,
                "connections": connections,
                "wrk_rps": round(wrk_rps, 1),
                "wrk_p50_ms": round(wrk_p50, 3),
            }
            for client in CLIENTS:
                ours = [
                    _run_loadtest(client_prefix, url, connections, duration_s, client) for _ in range(repeats)
                ]
                rps, p50 = statistics.median(r for r, _ in ours), statistics.median(p for _, p in ours)
                scenario[client] = {
                    "rps": round(rps, 1),
                    "p50_ms": round(p50, 3),
                    "rate_ratio": round(rps / wrk_rps, 3),
                    "p50_delta_ms": round(p50 - wrk_p50, 3),
                    "meets_rate_target": rps / wrk_rps >= MIN_RATE_RATIO,
                    "meets_p50_target": p50 - wrk_p50 <= MAX_P50_DELTA_MS,
                }
            scenarios.append(scenario)
    finally:
        server.terminate()
        server.wait(timeout=10)
    return {
        "pinned": bool(client_prefix),
        "duration_s": duration_s,
        "repeats": repeats,
        "targets": {"min_rate_ratio": MIN_RATE_RATIO, "max_p50_delta_ms": MAX_P50_DELTA_MS},
        "scenarios": scenarios,
    }


def markdown(results: dict[str, object]) -> str:
    """The results as a Markdown table."""
    if "skipped" in results:
        return f"Skipped: {results['skipped']}"
    header = "| scenario | connections | wrk req/s | wrk p50 ms |"
    for client in CLIENTS:
        header += f" {client} req/s | ratio | {client} p50 ms | p50 delta ms |"
    lines = [header, "|---|" + "---:|" * (3 + 4 * len(CLIENTS))]
    scenarios = results["scenarios"]
    assert isinstance(scenarios, list)
    for s in scenarios:
        row = f"| {s['scenario']} | {s['connections']} | {s['wrk_rps']:.0f} | {s['wrk_p50_ms']:.3f} |"
        for client in CLIENTS:
            c = s[client]
            row += f" {c['rps']:.0f} | {c['rate_ratio']:.0%} | {c['p50_ms']:.3f} | {c['p50_delta_ms']:+.3f} |"
        lines.append(row)
    pinning = (
        "server and client pinned to different cores" if results["pinned"] else "not pinned (no taskset)"
    )
    lines.append("")
    lines.append(
        f"Median of {results['repeats']} runs of {results['duration_s']:g} s each; {pinning}. "
        f"Targets (for {CLIENTS[0]}, the default): ratio >= {MIN_RATE_RATIO:.0%}, "
        f"p50 delta <= {MAX_P50_DELTA_MS} ms."
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--duration", type=float, default=2.0, help="seconds per run (default: %(default)s)")
    parser.add_argument(
        "--repeats", type=int, default=3, help="runs per tool and scenario (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    results = run(duration_s=args.duration, repeats=args.repeats)
    print(markdown(results))
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
