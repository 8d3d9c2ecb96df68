"""`python -m benchmarks.llm_join [--trials N]`: the time to first token of a streamed request that joins
a generation in progress, on the replica generating it and on another one.

Two predcache replicas (processes) over a private redis-server, in front of llm_upstream.py sending
300 tokens 10 ms apart (a generation of about 3 s). Each trial: a new prompt streamed through replica
A; 1 s later the same request streamed through A and through B at once. Per joiner: the client's TTFT
(request sent to first event), how many events came in its first read, and that its text is the
leader's. Upstream calls are the replicas' `predcache_model_calls_total`: one per trial.
Target: a joiner's TTFT under 20 ms at p50 on either replica (issue 20).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

import aiohttp
import orjson

from benchmarks.procs import RedisProcess, http_get, python_server

TARGET_JOIN_TTFT_MS = 20.0
TOKENS = 300
TOKEN_INTERVAL_MS = 10.0
JOIN_AFTER_S = 1.0


async def stream(session: aiohttp.ClientSession, url: str, prompt: str) -> dict[str, Any]:
    """One streamed chat completion: TTFT (ms), events in the first read, the text, events in all."""
    body = {"model": "bench", "messages": [{"role": "user", "content": prompt}], "stream": True, "seed": 1}
    sent = time.perf_counter()
    first_ms = 0.0
    first_read = 0
    events = 0
    text: list[str] = []
    async with session.post(
        url + "/v1/chat/completions", data=orjson.dumps(body), headers={"Content-Type": "application/json"}
    ) as response:
        if response.status != 200:
            raise RuntimeError(f"{url} answered {response.status}: {await response.text()}")
        buffer = b""
        async for chunk in response.content.iter_any():
            buffer += chunk
            *complete, buffer = buffer.split(b"\n\n")
            if complete and not events:
                first_ms = (time.perf_counter() - sent) * 1000
                first_read = len(complete)
            events += len(complete)
            for event in complete:
                data = event.removeprefix(b"data: ")
                if data != b"[DONE]":
                    for choice in orjson.loads(data)["choices"]:
                        text.append(choice["delta"].get("content") or "")
    return {"ttft_ms": first_ms, "first_read": first_read, "events": events, "text": "".join(text[1:])}


async def trials(urls: tuple[str, str], count: int) -> list[dict[str, Any]]:
    one, two = urls
    results = []
    async with aiohttp.ClientSession(headers={"Authorization": "Bearer sk-bench"}) as session:
        for i in range(count):
            prompt = f"join trial {i} {time.time_ns()}"
            leader = asyncio.create_task(stream(session, one, prompt))
            await asyncio.sleep(JOIN_AFTER_S)
            same, other = await asyncio.gather(stream(session, one, prompt), stream(session, two, prompt))
            first = await leader
            results.append(
                {
                    "same": same,
                    "other": other,
                    "identical": same["text"] == other["text"] == first["text"] and bool(first["text"]),
                }
            )
    return results


def _metric(url: str, name: str) -> float:
    for line in http_get(url + "/metrics").decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def run(count: int = 10) -> dict[str, object]:
    with RedisProcess() as redis, python_server(
        "benchmarks.llm_upstream",
        "--tokens", str(TOKENS),
        "--token-interval-ms", str(TOKEN_INTERVAL_MS),
        ready_path="/v1/models",
    ) as upstream:  # fmt: skip
        replica_args = (
            "--model", f"openai+{upstream.url}/v1",
            "--model-version", "bench",
            "--cache-scope-secret", "bench-secret",
            "--redis-url", redis.url,
            "--model-timeout", "30",
            "--log-level", "WARNING",
        )  # fmt: skip
        with (
            python_server("service", *replica_args, ready_path="/readyz") as one,
            python_server("service", *replica_args, ready_path="/readyz") as two,
        ):
            measured = asyncio.run(trials((one.url, two.url), count))
            calls = sum(_metric(replica.url, "predcache_model_calls_total") for replica in (one, two))
    figures: dict[str, object] = {"trials": count, "upstream_calls": calls}
    for where in ("same", "other"):
        ttft = sorted(trial[where]["ttft_ms"] for trial in measured)
        figures[where] = {
            "ttft_ms_p50": round(statistics.median(ttft), 2),
            "ttft_ms_max": round(ttft[-1], 2),
            "first_read_events_p50": statistics.median(trial[where]["first_read"] for trial in measured),
        }
    figures["identical_texts"] = all(trial["identical"] for trial in measured)
    figures["target_ms"] = TARGET_JOIN_TTFT_MS
    figures["met"] = (
        all(
            figures[where]["ttft_ms_p50"] < TARGET_JOIN_TTFT_MS  # type: ignore[index]
            for where in ("same", "other")
        )
        and calls == count
    )
    return figures


def markdown(result: dict[str, Any]) -> str:
    rows = ["| joiner | TTFT p50 / max (ms) | events in its first read (p50) |", "|---|---|---|"]
    for where, title in (("same", "on the generating replica"), ("other", "on another replica")):
        f = result[where]
        rows.append(f"| {title} | {f['ttft_ms_p50']} / {f['ttft_ms_max']} | {f['first_read_events_p50']} |")
    verdict = "met" if result["met"] else "NOT met"
    rows.append("")
    rows.append(
        f"{result['trials']} trials, each joined {JOIN_AFTER_S:g} s into a {TOKENS}-token generation "
        f"({TOKEN_INTERVAL_MS:g} ms apart); upstream calls: {result['upstream_calls']:g}; identical texts: "
        f"{result['identical_texts']}; target TTFT < {result['target_ms']} ms: {verdict}."
    )
    return "\n".join(rows) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = parser.parse_args(argv)
    result = run(args.trials)
    print(markdown(result))
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        print()
    return 0 if result["met"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
