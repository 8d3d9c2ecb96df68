"""Running wrk and reading its `--latency` report."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class WrkRun:
    """One wrk run: throughput and the percentiles wrk prints."""

    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    duration_s: float


def available() -> bool:
    return shutil.which("wrk") is not None


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[unit]


def parse(output: str) -> WrkRun:
    """The figures from wrk's report; non-2xx responses and socket errors both count as errors."""
    rate = re.search(r"Requests/sec:\s+([0-9.]+)", output)
    p50 = re.search(r"^\s+50%\s+([0-9.]+)(us|ms|s|m)\s*$", output, re.MULTILINE)
    p99 = re.search(r"^\s+99%\s+([0-9.]+)(us|ms|s|m)\s*$", output, re.MULTILINE)
    total = re.search(r"([0-9]+) requests in ([0-9.]+)(us|ms|s|m)", output)
    if rate is None or p50 is None or p99 is None or total is None:
        raise RuntimeError(f"could not read wrk's output:\n{output}")
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+([0-9]+)", output)
    socket_errors = re.search(
        r"Socket errors: connect ([0-9]+), read ([0-9]+), write ([0-9]+), timeout ([0-9]+)", output
    )
    errors = int(non_2xx[1]) if non_2xx else 0
    if socket_errors:
        errors += sum(int(n) for n in socket_errors.groups())
    return WrkRun(
        float(rate[1]),
        _ms(p50[1], p50[2]),
        _ms(p99[1], p99[2]),
        int(total[1]),
        errors,
        _ms(total[2], total[3]) / 1000,
    )


def run(
    url: str,
    *,
    connections: int,
    duration_s: float,
    prefix: Sequence[str] = (),
    json_body: bytes | None = None,
) -> WrkRun:
    """One closed-loop wrk run with one thread, behind the taskset `prefix`: GETs, or POSTs of
    `json_body` when given."""
    command = [*prefix, "wrk", "-t1", f"-c{connections}", f"-d{duration_s:g}s", "--latency"]
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        if json_body is not None:
            # A Lua long string takes the JSON as it is, quotes included.
            script.write(
                'wrk.method = "POST"\n'
                'wrk.headers["Content-Type"] = "application/json"\n'
                f"wrk.body = [==[{json_body.decode()}]==]\n"
            )
            script.flush()
            command += ["-s", script.name]
        completed = subprocess.run(
            [*command, url], check=True, capture_output=True, text=True, timeout=duration_s + 30
        )
    return parse(completed.stdout)
