"""A scripted OpenAI-compatible upstream, for the faults a real server will not produce on demand: a
stream cut halfway, an error event, a hang before the first token, a 429 with Retry-After, a 401.

Everything else (what a completion is, how a stream looks) the gateway's tests take from llama.cpp's
real server; this one only says what it was told to, and records what it was asked.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
from aiohttp import web

Fault = Literal["none", "cut", "error_event", "hang", "status"]
# What OpenAI's API sends when a generation fails mid-stream: the SDK raises APIError on it.
ERROR_EVENT = b'data: {"error": {"message": "scripted failure", "type": "server_error"}}\n\n'


@dataclass
class Script:
    """How the next requests are answered. `words` are the completion's content chunks."""

    fault: Fault = "none"
    words: tuple[str, ...] = ("Hello", ",", " world", "!")
    cut_after: int = 2  # "cut" and "error_event": content chunks sent before the fault
    status: int = 200  # "status": the status, body and headers of the answer
    body: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    event_delay_s: float = 0.0  # between two events of a stream
    usage: bool = True  # a usage chunk when stream_options.include_usage asks, as OpenAI's API does


@dataclass(frozen=True)
class Call:
    path: str
    body: dict[str, Any]
    authorization: str | None


class ScriptedUpstream:
    """`await aiohttp_server(upstream.app())`; set `upstream.script` before each step."""

    def __init__(self) -> None:
        self.script = Script()
        self.calls: list[Call] = []
        self.url = ""  # the API root (…/v1) once served
        self._ids = itertools.count(1)

    def app(self) -> web.Application:
        app = web.Application()
        for path in ("/v1/chat/completions", "/v1/completions", "/v1/embeddings"):
            app.router.add_post(path, self._answer)
        app.router.add_get("/v1/models", self._models)
        return app

    def count(self, path: str = "/v1/chat/completions") -> int:
        return sum(call.path == path for call in self.calls)

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "scripted", "object": "model"}]})

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.calls.append(Call(request.path, body, request.headers.get("Authorization")))
        script = self.script
        if script.fault == "status":
            return web.json_response(script.body, status=script.status, headers=script.headers)
        if script.fault == "hang" and not body.get("stream"):
            await asyncio.sleep(3600)
        if request.path == "/v1/embeddings":
            return web.json_response(self._embeddings(body))
        completion_id = f"chatcmpl-scripted-{next(self._ids)}"
        if not body.get("stream"):
            return web.json_response(self._completion(completion_id, body))
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        if script.fault == "hang":
            await asyncio.sleep(3600)
        for event in self._events(completion_id, body):
            if event is None:  # the fault's moment
                if script.fault == "cut":
                    assert request.transport is not None
                    request.transport.close()  # what came so far is sent; no end of the chunked body
                    return response
                await response.write(ERROR_EVENT)
                await response.write(b"data: [DONE]\n\n")
                return response
            await response.write(b"data: " + orjson.dumps(event) + b"\n\n")
            if script.event_delay_s:
                await asyncio.sleep(script.event_delay_s)
        await response.write(b"data: [DONE]\n\n")
        return response

    def _events(self, completion_id: str, body: dict[str, Any]) -> list[dict[str, Any] | None]:
        script = self.script
        created = int(time.time())

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": "scripted",
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            }

        events: list[dict[str, Any] | None] = [chunk({"role": "assistant", "content": ""})]
        for i, word in enumerate(script.words):
            if script.fault in ("cut", "error_event") and i == script.cut_after:
                events.append(None)
                return events
            events.append(chunk({"content": word}))
        events.append(chunk({}, "stop"))
        if script.usage and (body.get("stream_options") or {}).get("include_usage"):
            usage = self._usage()
            events.append({**chunk({}), "choices": [], "usage": usage})
        return events

    def _completion(self, completion_id: str, body: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": completion_id,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": "scripted",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "".join(self.script.words)},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": self._usage(),
        }

    def _usage(self) -> dict[str, int]:
        completion = len(self.script.words)
        return {"prompt_tokens": 7, "completion_tokens": completion, "total_tokens": 7 + completion}

    def _embeddings(self, body: dict[str, Any]) -> dict[str, Any]:
        texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
        return {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": [float(len(str(text))), float(i), 0.5]}
                for i, text in enumerate(texts)
            ],
            "model": "scripted",
            "usage": {"prompt_tokens": len(texts), "total_tokens": len(texts)},
        }
