"""Upstream mode against a scripted model server, for what a real one will not do on demand: cookies,
429 with Retry-After, answers of any size. Nothing of one upstream call reaches another, a busy
upstream is left alone as long as it asked, an oversized answer is cut off while it is read."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from service.app import create_app
from service.settings.config import Settings
from tests.support.scripted_model_server import Received, ScriptedModelServer

pytestmark = pytest.mark.redis

Client = TestClient[web.Request, web.Application]


@dataclass
class Scripted:
    upstream: ScriptedModelServer
    url: str  # by host name, not address: aiohttp's cookie jar ignores cookies from IP addresses


@pytest.fixture
async def scripted(aiohttp_server: Any) -> Scripted:
    upstream = ScriptedModelServer()
    server = await aiohttp_server(upstream.app)
    return Scripted(upstream, f"http://localhost:{server.port}/predict")


@pytest.fixture
def predcache(
    aiohttp_client: Any, scripted: Scripted, redis: Redis, model_version: str
) -> Callable[..., Awaitable[Client]]:
    """predcache in front of the scripted upstream, built from settings as `python -m service` does."""

    async def make(**settings: Any) -> Client:
        settings = {"model": scripted.url, "model_version": model_version, "redis_timeout_s": 1.0, **settings}
        client: Client = await aiohttp_client(create_app(replace(Settings(), **settings), redis=redis))
        return client

    return make


async def post(client: Client, body: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
    async with client.post("/predict", json=body) as response:
        return response.status, orjson.loads(await response.read()), dict(response.headers)


async def test_nothing_of_one_upstream_call_reaches_another(
    scripted: Scripted, predcache: Callable[..., Awaitable[Client]]
) -> None:
    """The upstream sets a session cookie on every answer: no later call carries it, every call's
    headers are the same but for the body's length, and no client sees the cookie."""

    async def with_cookie(request: web.Request, received: Received) -> web.StreamResponse:
        response = web.json_response(body=orjson.dumps({"echo": received.input}))
        response.set_cookie("session", f"secret-of-{received.body.decode()}", path="/", max_age=3600)
        return response

    scripted.upstream.script = with_cookie
    client = await predcache()
    replies = [await post(client, {"q": q}) for q in range(3)]
    assert [(status, answer["echo"]) for status, answer, _ in replies] == [(200, {"q": q}) for q in range(3)]
    assert not any("Set-Cookie" in headers for _, _, headers in replies)
    received = scripted.upstream.received
    assert [r.input for r in received] == [{"q": 0}, {"q": 1}, {"q": 2}]
    assert not any("Cookie" in r.headers for r in received)

    def headers(r: Received) -> list[tuple[str, str]]:
        return sorted((k.lower(), v) for k, v in r.headers.items() if k.lower() != "content-length")

    assert headers(received[0]) == headers(received[1]) == headers(received[2])
