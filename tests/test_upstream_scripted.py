"""Upstream mode against a scripted model server, for what a real one will not do on demand: cookies,
429 with Retry-After, answers of any size. Nothing of one upstream call reaches another, a busy
upstream is left alone as long as it asked, an oversized answer is cut off while it is read."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from service.app import create_app
from service.models.upstream_answer import MAX_RETRY_AFTER_S, retry_after_s
from service.settings.config import Settings
from tests.faults.conftest import eventually
from tests.support.scripted_model_server import Received, Script, ScriptedModelServer, Streamed, echo

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


def busy(retry_after: str, *, status: int = 429) -> Script:
    async def answer(request: web.Request, received: Received) -> web.StreamResponse:
        return web.json_response({"error": "slow down"}, status=status, headers={"Retry-After": retry_after})

    return answer


async def test_an_upstream_429_with_retry_after_is_left_alone_until_it_has_passed(
    scripted: Scripted, predcache: Callable[..., Awaitable[Client]]
) -> None:
    """The 503 carries the upstream's Retry-After; until it has passed, misses get the same 503 at
    once without an upstream call, hits are served as usual; then the upstream is asked again."""
    client = await predcache()
    assert (await post(client, {"q": "cached"}))[0] == 200
    scripted.upstream.script = busy("2")
    status, answer, headers = await post(client, {"q": 1})
    assert (status, answer["error"]["code"], headers["Retry-After"]) == (503, "model_busy", "2")
    calls = len(scripted.upstream.received)
    started = time.monotonic()
    for q in range(2, 7):
        status, answer, headers = await post(client, {"q": q})
        assert (status, answer["error"]["code"]) == (503, "model_busy")
        assert headers["Retry-After"] in ("1", "2")
    status, answer, headers = await post(client, {"q": "cached"})
    assert (status, headers["X-Cache"], answer["echo"]) == (200, "HIT", {"q": "cached"})
    assert time.monotonic() - started < 1.0  # refused at once, not queued nor sent
    assert len(scripted.upstream.received) == calls  # the upstream was not called meanwhile
    scripted.upstream.script = echo
    await asyncio.sleep(2.0 - (time.monotonic() - started))
    status, answer, _ = await post(client, {"q": 1})
    assert (status, answer["echo"]) == (200, {"q": 1})
    assert len(scripted.upstream.received) == calls + 1


@pytest.mark.parametrize(
    ("status", "retry_after", "paused"),
    [(429, "3", True), (503, "3", True), (429, "soon", False), (429, "", False)],
)
async def test_only_a_retry_after_the_upstream_gives_pauses_calls(
    scripted: Scripted,
    predcache: Callable[..., Awaitable[Client]],
    status: int,
    retry_after: str,
    paused: bool,
) -> None:
    """A 503 with Retry-After pauses calls like a 429; a Retry-After that is no delay is a plain model
    error, and the next request asks the upstream again."""
    client = await predcache()
    scripted.upstream.script = busy(retry_after, status=status)
    first = await post(client, {"q": 1})
    second = await post(client, {"q": 2})
    assert (first[0], second[0]) == (503, 503)
    if paused:
        assert (first[2]["Retry-After"], second[2]["Retry-After"] in ("2", "3")) == ("3", True)
        assert len(scripted.upstream.received) == 1
    else:
        assert first[1]["error"]["code"] == "model_error"
        assert "Retry-After" not in first[2]
        assert len(scripted.upstream.received) == 2


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("30", 30.0),
        (" 7 ", 7.0),
        ("0", 0.0),
        ("Wed, 21 Oct 2015 07:28:30 GMT", 30.0),  # 30 s after the test's "now"
        ("Wed, 21 Oct 2015 07:27:00 GMT", 0.0),  # in the past
        ("100000", float(MAX_RETRY_AFTER_S)),
        ("-1", None),
        ("1.5", None),
        ("tomorrow", None),
        ("", None),
    ],
)
def test_retry_after_is_read_as_seconds_or_a_date(value: str, seconds: float | None) -> None:
    now = datetime(2015, 10, 21, 7, 28, 0, tzinfo=UTC)
    assert retry_after_s(value, now) == seconds


MiB = 1024 * 1024


@pytest.mark.parametrize("announce", [True, False], ids=["content-length", "chunked"])
async def test_an_answer_over_the_cap_is_a_502_and_its_connection_dropped(
    scripted: Scripted,
    predcache: Callable[..., Awaitable[Client]],
    caplog: pytest.LogCaptureFixture,
    announce: bool,
) -> None:
    """A 50 MB answer with a 1 MiB cap: 502 with a JSON error, read no further than the cap (the
    upstream's writes stop well short of 50 MB, its reader gone), never cached, one log line for
    five of them; the next answer of a normal size is served."""
    streamed = Streamed(50 * MiB, announce=announce)
    scripted.upstream.script = streamed
    client = await predcache(upstream_max_response_bytes=MiB)
    for q in range(5):
        status, answer, headers = await post(client, {"q": q})
        assert (status, answer["error"]["code"]) == (502, "upstream_answer_too_large")
        assert "X-Cache" not in headers
    await eventually(lambda: streamed.hung_up == 5, timeout_s=5.0)
    # Kernel buffers hold a few MiB at most; without the cap all 250 MB would have gone out.
    assert streamed.sent_bytes < 5 * (MiB + 16 * MiB)
    lines = [r for r in caplog.records if "UPSTREAM_MAX_RESPONSE_BYTES" in r.getMessage()]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert lines[0].levelname == "WARNING"
    scripted.upstream.script = echo
    status, answer, headers = await post(client, {"q": 0})
    assert (status, answer["echo"], headers["X-Cache"]) == (200, {"q": 0}, "MISS")


@pytest.mark.parametrize(("status", "answered"), [(400, 400), (422, 422), (500, 503)])
async def test_a_huge_error_body_is_never_passed_on_whole(
    scripted: Scripted, predcache: Callable[..., Awaitable[Client]], status: int, answered: int
) -> None:
    """A 5 MB error body (under the answer cap): a 4xx still tells the client its input was refused,
    a 5xx is still the model failing, in a short JSON error either way."""
    streamed = Streamed(5 * MiB, status=status)
    scripted.upstream.script = streamed
    client = await predcache()
    async with client.post("/predict", json={"q": 1}) as response:
        body = await response.read()
        assert response.status == answered
        assert len(body) < 1024
        assert orjson.loads(body)["error"]["code"] in ("upstream_refused", "model_error")
    await eventually(lambda: streamed.hung_up == 1, timeout_s=5.0)
    assert streamed.sent_bytes < 5 * MiB
