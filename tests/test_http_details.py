"""What the service says over the wire beyond its handlers: Allow on 405, Server, malformed requests.

Most of this lives in aiohttp's protocol layer, so the tests speak raw bytes to a real socket.
"""

from __future__ import annotations

import asyncio
import itertools
import logging

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage
from aiohttp.test_utils import TestClient
from multidict import CIMultiDict
from prometheus_client.parser import text_string_to_metric_families

from service.app import create_app
from service.http.responses import JSON
from service.http.server import SERVER_NAME, MalformedRequestLog
from service.settings.config import Settings
from tests.conftest import MakeClient
from tests.support.models import CountingModel

MALFORMED = {
    "nul-in-header-value": b"GET /predict?pair=ETH-EUR HTTP/1.1\r\nHost: x\r\nX-Note: a\x00b\r\n\r\n",
    "cr-in-header-value": b"GET /predict?pair=ETH-EUR HTTP/1.1\r\nHost: x\r\nX-Note: a\rb\r\n\r\n",
    "space-in-header-name": b"GET /predict?pair=ETH-EUR HTTP/1.1\r\nHost: x\r\nX Note: a\r\n\r\n",
    "bad-version": b"GET /predict HTTP/9\r\nHost: x\r\n\r\n",
    "truncated-request-line": b"GET /predict HT\r\n\r\n",
    "bad-method": b"G@T /predict HTTP/1.1\r\nHost: x\r\n\r\n",
}


class RawResponse:
    def __init__(self, raw: bytes) -> None:
        head, _, self.body = raw.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        self.status = int(status_line.split(" ")[1])
        self.headers: CIMultiDict[str] = CIMultiDict()
        for line in header_lines:
            name, _, value = line.partition(":")
            self.headers.add(name, value.strip())


async def exchange(client: TestClient[web.Request, web.Application], request: bytes) -> RawResponse:
    """Send `request` on a connection of its own; the response ends when the server closes it."""
    assert client.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(5):
            raw = await reader.read(-1)
    finally:
        writer.close()
    return RawResponse(raw)


def get(target: str, method: str = "GET") -> bytes:
    return f"{method} {target} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n".encode()


async def test_405_says_which_methods_are_allowed_in_a_json_error(make_client: MakeClient) -> None:
    client = await make_client(model=CountingModel())
    for method, path, allowed in [
        ("TRACE", "/predict", "GET"),
        ("PUT", "/predict", "POST"),
        ("GET", "/cache", "DELETE"),
    ]:
        response = await client.request(method, path)
        assert response.status == 405
        assert allowed in response.headers["Allow"].replace(" ", "").split(",")
        assert response.content_type == "application/json"
        error = orjson.loads(await response.read())["error"]
        assert error == {"code": "method_not_allowed", "message": "Method Not Allowed"}


ANSWERS = {
    "not-found": (get("/nope"), 404),
    "method-not-allowed": (get("/predict?pair=ETH-EUR", method="TRACE"), 405),
    "invalid-pair": (get("/predict?pair=NOPE"), 400),
    "healthz": (get("/healthz"), 200),
    **{name: (request, 400) for name, request in MALFORMED.items()},
}


@pytest.mark.parametrize(("request_bytes", "status"), ANSWERS.values(), ids=ANSWERS.keys())
async def test_no_response_names_python_or_aiohttp(
    make_client: MakeClient, request_bytes: bytes, status: int
) -> None:
    """Routed answers, our errors and aiohttp's own 400s for unparsable requests all say Server: predcache."""
    client = await make_client(model=CountingModel())
    response = await exchange(client, request_bytes)
    assert response.status == status
    assert response.headers.getall("Server") == [SERVER_NAME]


async def test_hits_and_misses_say_server_predcache(make_client: MakeClient) -> None:
    client = await make_client(model=CountingModel())
    miss = await exchange(client, get("/predict?pair=ETH-EUR"))
    hit = await exchange(client, get("/predict?pair=ETH-EUR"))
    assert (miss.headers["X-Cache"], hit.headers["X-Cache"]) == ("MISS", "HIT")
    assert miss.headers.getall("Server") == hit.headers.getall("Server") == [SERVER_NAME]


async def test_1000_malformed_requests_log_a_few_lines_and_no_traceback(
    make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Each is answered 400, but together they log at most a few WARNING lines, none with a traceback.

    aiohttp closes the connection after a request it cannot parse, so each goes on a connection of
    its own, 50 connections at a time.
    """
    caplog.set_level(logging.INFO)
    client = await make_client(model=CountingModel())
    requests = list(itertools.islice(itertools.cycle(MALFORMED.values()), 1000))
    statuses: list[int] = []
    for start in range(0, len(requests), 50):
        batch = requests[start : start + 50]
        statuses += [r.status for r in await asyncio.gather(*(exchange(client, b) for b in batch))]
    assert statuses == [400] * 1000
    loud = [record for record in caplog.records if record.levelno >= logging.WARNING]
    assert 1 <= len(loud) <= 3, [record.getMessage() for record in loud]
    assert all(record.exc_info is None and record.exc_text is None for record in loud)
    assert all("\n" not in record.getMessage() for record in loud)
    assert "answered 400" in loud[0].getMessage()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_malformed_request_lines_are_rate_limited_and_count_what_they_left_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    log = MalformedRequestLog(logging.getLogger("test.http"), interval_s=10.0, clock=clock)
    with caplog.at_level(logging.INFO, logger="test.http"):
        for _ in range(5):
            log.exception(
                "Error handling request from %s", "10.0.0.1", exc_info=BadHttpMessage("Bad:\n  b'x'")
            )
        clock.now += 10.0
        log.exception("Error handling request from %s", "10.0.0.2", exc_info=BadHttpMessage("Other"))
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", "Error handling request from 10.0.0.1: BadHttpMessage: Bad; answered 400"),
        (
            "WARNING",
            "Error handling request from 10.0.0.2: BadHttpMessage: Other; answered 400"
            " (4 more since the previous such line, not logged)",
        ),
    ]


def test_other_errors_pass_through_with_their_traceback(caplog: pytest.LogCaptureFixture) -> None:
    """Only the client's malformed requests are quietened: a server-side failure stays an ERROR."""
    log = MalformedRequestLog(logging.getLogger("test.http"), clock=FakeClock())
    with caplog.at_level(logging.DEBUG, logger="test.http"):
        for _ in range(3):
            log.exception("Error handling request from %s", "10.0.0.1", exc_info=RuntimeError("bug"))
        log.debug("not HTTP at all from %s", "10.0.0.1")
    assert [r.levelname for r in caplog.records] == ["ERROR", "ERROR", "ERROR", "DEBUG"]
    assert all(r.exc_info is not None for r in caplog.records[:3])


async def test_clients_hanging_up_mid_body_are_counted_as_such_without_a_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """50 POST bodies cut short (Content-Length 1000, 80 bytes sent, then the connection closed):
    counted as status 499 (nginx's "client closed request"), not as 500 server errors; no line above
    DEBUG and no traceback in the log; the model is never called.

    Served as `python -m service` serves it (web.run_app's AppRunner): its handlers run on when their
    client goes, where aiohttp's test server cancels them.
    """
    caplog.set_level(logging.DEBUG)
    model = CountingModel()
    runner = web.AppRunner(create_app(Settings(), model=model), access_log=None)  # ACCESS_LOG's default
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    caplog.clear()  # what startup said

    async def hang_up(path: str) -> None:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        head = f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: {JSON}\r\nContent-Length: 1000\r\n\r\n"
        writer.write(head.encode() + b'{"pair": "ETH-EUR", "pad": "' + b"x" * 52)
        await writer.drain()
        await asyncio.sleep(0.05)  # the handler is reading the body when the client goes
        writer.close()
        await writer.wait_closed()

    async def counted(session: aiohttp.ClientSession) -> dict[tuple[str, str], float]:
        async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
            text = await response.text()
        return {
            (s.labels["endpoint"], s.labels["status"]): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name == "predcache_requests_total" and s.labels["endpoint"].startswith("/predict")
        }

    try:
        await asyncio.gather(*(hang_up(path) for path in ["/predict", "/predict/batch"] * 25))
        async with aiohttp.ClientSession() as session:
            for _ in range(250):  # the server learns of each hang-up a little after the client went
                requests = await counted(session)
                if sum(requests.values()) >= 50:
                    break
                await asyncio.sleep(0.02)
    finally:
        await runner.cleanup()
    assert {series: n for series, n in requests.items() if n} == {
        ("/predict", "499"): 25,
        ("/predict/batch", "499"): 25,
    }
    assert model.total_calls == 0
    loud = [r for r in caplog.records if r.levelno > logging.DEBUG]
    assert not loud, [r.getMessage() for r in loud]
    assert not [r for r in caplog.records if r.exc_info is not None or r.exc_text]
