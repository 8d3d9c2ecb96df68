"""What the service says over the wire beyond its handlers: Allow on 405, Server, malformed requests.

Most of this lives in aiohttp's protocol layer, so the tests speak raw bytes to a real socket.
"""

from __future__ import annotations

import asyncio
import itertools
import logging

import orjson
import pytest
from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage
from aiohttp.test_utils import TestClient
from multidict import CIMultiDict

from service.http.server import SERVER_NAME, MalformedRequestLog
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
