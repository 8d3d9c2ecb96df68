"""`python -m benchmarks.llm_upstream --port P`: an OpenAI-compatible streaming upstream that stamps
its first event with the moment it writes it (`time.monotonic_ns()`, one clock for every process of
the machine), so a client can tell how long that event took to reach it, directly or through predcache.

Each streamed chat completion: a role chunk whose content is the stamp, `--tokens` content chunks
`--token-interval-ms` apart, a finish chunk, `data: [DONE]`.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import time
from collections.abc import Sequence

import orjson
from aiohttp import web


def app(tokens: int, interval_s: float) -> web.Application:
    ids = itertools.count()

    async def chat(request: web.Request) -> web.StreamResponse:
        await request.read()
        completion_id = f"chatcmpl-bench-{next(ids)}"

        def chunk(delta: dict[str, str], finish: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            payload = {"id": completion_id, "object": "chat.completion.chunk", "created": 0, "model": "bench"}
            return b"data: " + orjson.dumps({**payload, "choices": [choice]}) + b"\n\n"

        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(chunk({"role": "assistant", "content": str(time.monotonic_ns())}))
        for _ in range(tokens):
            await asyncio.sleep(interval_s)
            await response.write(chunk({"content": " token"}))
        await response.write(chunk({}, "stop"))
        await response.write(b"data: [DONE]\n\n")
        return response

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "bench", "object": "model"}]})

    application = web.Application()
    application.router.add_post("/v1/chat/completions", chat)
    application.router.add_get("/v1/models", models)
    return application


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tokens", type=int, default=8)
    parser.add_argument("--token-interval-ms", type=float, default=2.0)
    args = parser.parse_args(argv)
    web.run_app(
        app(args.tokens, args.token_interval_ms / 1000),
        host="127.0.0.1",
        port=args.port,
        print=None,
        access_log=None,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
