"""A scripted model server (aiohttp) for what a real one will not do on demand: set cookies, answer
429 with Retry-After, stream an answer of any size. It records every request it receives."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import orjson
from aiohttp import web
from multidict import CIMultiDict


@dataclass(frozen=True)
class Received:
    """One request as the upstream saw it."""

    headers: CIMultiDict[str]
    body: bytes

    @property
    def input(self) -> object:
        return orjson.loads(self.body)


Script = Callable[[web.Request, Received], Awaitable[web.StreamResponse]]


async def echo(request: web.Request, received: Received) -> web.StreamResponse:
    """The default answer: 200 with `{"echo": <the input>}`."""
    return web.json_response(body=orjson.dumps({"echo": received.input}))


class ScriptedModelServer:
    """`POST /predict` answers by `script` (the request and what was received, to a response), echo
    by default; `received` lists the requests in order."""

    def __init__(self) -> None:
        self.script: Script = echo
        self.received: list[Received] = []
        self.app = web.Application()
        self.app.router.add_post("/predict", self._handle)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        received = Received(CIMultiDict(request.headers), await request.read())
        self.received.append(received)
        return await self.script(request, received)


class Streamed:
    """A script answering a JSON string of `total_bytes`, written chunk by chunk as the reader takes
    them, announced by Content-Length or chunked; `sent_bytes` is what got out before the reader
    hung up, `hung_up` how many readers did."""

    def __init__(
        self, total_bytes: int, *, status: int = 200, announce: bool = True, chunk_bytes: int = 64 * 1024
    ) -> None:
        self.total_bytes = total_bytes
        self.status = status
        self.announce = announce
        self.chunk_bytes = chunk_bytes
        self.sent_bytes = 0
        self.hung_up = 0

    async def __call__(self, request: web.Request, received: Received) -> web.StreamResponse:
        response = web.StreamResponse(status=self.status, headers={"Content-Type": "application/json"})
        if self.announce:
            response.content_length = self.total_bytes
        await response.prepare(request)
        # One chunk's worth of memory here, whatever the size: the server's memory is not measured.
        filler = b"x" * self.chunk_bytes
        left = self.total_bytes - 2
        try:
            await response.write(b'"')
            while left > 0:
                chunk = filler[: min(left, self.chunk_bytes)]
                await response.write(chunk)  # waits while the reader's buffers are full
                self.sent_bytes += len(chunk)
                left -= len(chunk)
            await response.write_eof(b'"')
        except ConnectionError:
            self.hung_up += 1
        except asyncio.CancelledError:  # the server cancels a handler whose client hung up
            self.hung_up += 1
            raise
        return response
