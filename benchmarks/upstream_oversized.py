"""Eight concurrent 50 MB upstream answers: what predcache's process holds while it refuses them.

`.venv/bin/python -m benchmarks.upstream_oversized [--answer-mb 50] [--concurrent 8] [--rounds 3] [--chunked]`
runs a scripted upstream (tests.support.scripted_model_server.py) in a child process and predcache
(embedded cache, UPSTREAM_MAX_RESPONSE_BYTES at its default) in this one, then prints the statuses,
what the upstream got out before predcache hung up, and this process's resident memory before, at
its peak (VmHWM) and after. `--chunked`: answers without a Content-Length, so that predcache has to
read up to the cap before it knows. Linux only (it reads /proc/self/status).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import socket
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from service.app import create_app
from service.models.upstream import DEFAULT_MAX_RESPONSE_BYTES
from service.settings.config import Settings
from tests.support.scripted_model_server import ScriptedModelServer, Streamed

MiB = 1024 * 1024


def _memory_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _serve_upstream(
    sock: socket.socket, answer_bytes: int, chunked: bool, sent: multiprocessing.Queue[int]
) -> None:
    upstream = ScriptedModelServer()
    streamed = Streamed(answer_bytes, announce=not chunked)
    upstream.script = streamed

    async def report(app: web.Application) -> None:
        sent.put(streamed.sent_bytes)

    upstream.app.on_shutdown.append(report)
    web.run_app(upstream.app, sock=sock, print=None, handle_signals=True)


async def _run(answer_mb: int, concurrent: int, rounds: int, chunked: bool) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sent: multiprocessing.Queue[int] = multiprocessing.Queue()
    child = multiprocessing.get_context("fork").Process(
        target=_serve_upstream, args=(sock, answer_mb * MiB, chunked, sent), daemon=True
    )
    child.start()
    settings = replace(Settings(), model=f"http://127.0.0.1:{port}/predict", model_version="bench")
    async with TestClient(TestServer(create_app(settings))) as client:
        await asyncio.sleep(0.5)  # the child's server is listening
        before = _memory_mib("VmRSS")
        statuses: Counter[int] = Counter()
        for round_ in range(rounds):
            replies = await asyncio.gather(
                *(client.post("/predict", json={"round": round_, "q": q}) for q in range(concurrent))
            )
            statuses.update(reply.status for reply in replies)
        after = _memory_mib("VmRSS")
        peak = _memory_mib("VmHWM")
    child.terminate()
    child.join()
    requests = concurrent * rounds
    how = "chunked" if chunked else "with Content-Length"
    print(f"{requests} requests for {answer_mb} MB answers ({how}), {concurrent} at once: {dict(statuses)}")
    cap = settings.upstream_max_response_bytes or DEFAULT_MAX_RESPONSE_BYTES
    print(f"UPSTREAM_MAX_RESPONSE_BYTES: {cap / MiB:g} MiB")
    print(f"predcache RSS: {before:.0f} MiB before, {peak:.0f} MiB peak, {after:.0f} MiB after")
    if not sent.empty():
        print(f"upstream got out {sent.get() / MiB:.0f} MiB of {requests * answer_mb} MB in all")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.upstream_oversized", description=__doc__)
    parser.add_argument("--answer-mb", type=int, default=50)
    parser.add_argument("--concurrent", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--chunked", action="store_true")
    args = parser.parse_args(argv)
    asyncio.run(_run(args.answer_mb, args.concurrent, args.rounds, args.chunked))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
