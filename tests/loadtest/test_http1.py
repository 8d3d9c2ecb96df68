"""The raw HTTP/1.1 client: framing, closed and reset connections, timeouts, and the same figures as
the aiohttp client against the same server."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
from yarl import URL

from loadtest.cli import main
from loadtest.http1 import (
    ConnectError,
    Connection,
    PayloadError,
    Response,
    ServerDisconnectedError,
    build_request,
)
from loadtest.settings import RunSettings

from .conftest import CHUNKED_BODY, RawServer


def _request(server: RawServer, path: str) -> bytes:
    return build_request(URL(f"{server.url}{path}"))


def test_request_bytes_carry_path_query_and_host() -> None:
    """The request line has the encoded path and query; Host has the port unless it is the default."""
    assert build_request(URL("http://example.com/predict?pair=ETH EUR")).startswith(
        b"GET /predict?pair=ETH+EUR HTTP/1.1\r\nHost: example.com\r\n"
    )
    assert b"\r\nHost: [::1]:8080\r\n" in build_request(URL("http://[::1]:8080/"))
    assert build_request(URL("http://h/")).endswith(b"\r\n\r\n")


def test_post_request_bytes_carry_the_json_body() -> None:
    """A POST has the JSON content type, the body's length in bytes, and the body after the head."""
    body = '{"pair":"ETH-EUR","note":"€"}'.encode()
    request = build_request(URL("http://example.com:8000/predict/batch"), body)
    head, _, sent = request.partition(b"\r\n\r\n")
    assert head.startswith(b"POST /predict/batch HTTP/1.1\r\nHost: example.com:8000\r\n")
    assert b"\r\nContent-Type: application/json\r\n" in head
    assert f"\r\nContent-Length: {len(body)}".encode() in head
    assert sent == body


@pytest.mark.parametrize(
    ("path", "body"), [("/chunked", CHUNKED_BODY), ("/close", b"ok"), ("/until-close", b"five!")]
)
async def test_keep_body_returns_the_decoded_body(raw_server: RawServer, path: str, body: bytes) -> None:
    """With keep_body a response carries its body, decoded from chunks, whatever its framing, for every
    request on the connection; without it, only the size."""
    connection = Connection("127.0.0.1", raw_server.port, timeout_s=2, keep_body=True)
    request = _request(raw_server, path)
    responses = [await connection.request(request) for _ in range(2)]
    connection.close()
    assert [response.body for response in responses] == [body, body]
    assert responses[0].nbytes == len(body)
    plain = Connection("127.0.0.1", raw_server.port, timeout_s=2)
    assert (await plain.request(request)).body is None
    plain.close()


async def test_chunked_body_split_across_packets(raw_server: RawServer) -> None:
    """A chunked body with an extension and a trailer, arriving in pieces, is counted once decoded;
    the connection is kept for the next request."""
    connection = Connection("127.0.0.1", raw_server.port, timeout_s=2)
    request = _request(raw_server, "/chunked")
    responses = [await connection.request(request) for _ in range(3)]
    connection.close()
    assert responses == [Response(200, len(CHUNKED_BODY), "HIT", None)] * 3
    assert raw_server.connections == 1


async def test_chunk_extensions_are_ignored(raw_server: RawServer) -> None:
    """`3;name=value` is a 3-byte chunk."""
    connection = Connection("127.0.0.1", raw_server.port, timeout_s=2)
    assert await connection.request(_request(raw_server, "/chunk-extension")) == Response(200, 3, None, None)
    connection.close()


async def test_connection_close_reconnects(raw_server: RawServer) -> None:
    """A server answering with `Connection: close` gets a new connection for every request."""
    connection = Connection("127.0.0.1", raw_server.port, timeout_s=2)
    request = _request(raw_server, "/close")
    responses = [await connection.request(request) for _ in range(3)]
    connection.close()
    assert responses == [Response(200, 2, None, "predcache; fwd=uri-miss; stored")] * 3
    assert raw_server.connections == 3


async def test_body_framed_by_close(raw_server: RawServer) -> None:
    """Without Content-Length or chunking, the body runs until the server closes."""
    connection = Connection("127.0.0.1", raw_server.port, timeout_s=2)
    request = _request(raw_server, "/until-close")
    assert await connection.request(request) == Response(200, 5, "STALE", None)
    assert await connection.request(request) == Response(200, 5, "STALE", None)
    assert raw_server.connections == 2


@pytest.mark.parametrize(
    ("path", "error"),
    [
        ("/reset-before-head", ServerDisconnectedError),
        ("/reset-in-body", PayloadError),
        ("/garbage", PayloadError),
    ],
)
async def test_broken_responses_raise_by_kind(
    raw_server: RawServer, path: str, error: type[Exception]
) -> None:
    """A reset before the head, a reset mid-body and a non-HTTP answer fail with their own kind, and the
    next request opens a fresh connection."""
    connection = Connection("127.0.0.1", raw_server.port, timeout_s=2)
    with pytest.raises(error):
        await connection.request(_request(raw_server, path))
    assert await connection.request(_request(raw_server, "/chunked")) == Response(
        200, len(CHUNKED_BODY), "HIT", None
    )
    connection.close()
    assert raw_server.connections == 2


async def test_timeout_closes_the_connection(raw_server: RawServer) -> None:
    """A request past the timeout raises TimeoutError on time; the late answer can't be mistaken for
    the next one because the connection is replaced."""
    connection = Connection("127.0.0.1", raw_server.port, timeout_s=0.1)
    started = time.perf_counter()
    with pytest.raises(TimeoutError):
        await connection.request(_request(raw_server, "/hang"))
    assert 0.1 <= time.perf_counter() - started < 0.5
    assert (await connection.request(_request(raw_server, "/chunked"))).status == 200
    connection.close()
    assert raw_server.connections == 2


async def test_refused_connection_is_a_connect_error(unused_tcp_port: int) -> None:
    """Nothing listening: ConnectError, counted as `connect`."""
    connection = Connection("127.0.0.1", unused_tcp_port, timeout_s=1)
    with pytest.raises(ConnectError) as caught:
        await connection.request(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert caught.value.kind == "connect"


async def test_cancellation_closes_the_connection(raw_server: RawServer) -> None:
    """A cancelled request leaves no half-read response behind: the next request reconnects."""
    connection = Connection("127.0.0.1", raw_server.port, timeout_s=5)
    task = asyncio.ensure_future(connection.request(_request(raw_server, "/hang")))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (await connection.request(_request(raw_server, "/close"))).status == 200
    assert raw_server.connections == 2


def _run(tmp_path: Path, client: str, *args: str) -> dict[str, Any]:
    path = tmp_path / f"{client}.json"
    main([*args, "--client", client, "--no-progress", "--json", str(path)])
    run: dict[str, Any] = json.loads(path.read_text())
    return run


def _figures(run: dict[str, Any]) -> dict[str, Any]:
    return {
        key: run[key]
        for key in ("requests", "errors", "errors_by_kind", "status_codes", "bytes_received", "hit_ratio")
    } | {"classes": {name: c["count"] for name, c in run["classes"].items()}}


@pytest.mark.parametrize(
    "path", ["/chunked", "/close", "/until-close", "/reset-before-head", "/reset-in-body", "/hang"]
)
def test_both_clients_report_the_same_figures(raw_server: RawServer, tmp_path: Path, path: str) -> None:
    """Counts, error kinds, status codes, bytes and classes agree between the raw and aiohttp clients."""
    args = ("--url", f"{raw_server.url}{path}", "-n", "12", "-c", "3", "--timeout", "200ms")
    raw, reference = _run(tmp_path, "raw", *args), _run(tmp_path, "aiohttp", *args)
    assert raw["settings"]["client"] == "raw"
    assert reference["settings"]["client"] == "aiohttp"
    assert _figures(raw) == _figures(reference)


def test_auto_picks_raw_for_http_and_aiohttp_for_https() -> None:
    """--client auto (the default) is raw for http:// and aiohttp for https://."""
    assert RunSettings("http://h/", (), 1, 1).resolved_client == "raw"
    assert RunSettings("https://h/", (), 1, 1).resolved_client == "aiohttp"
    assert RunSettings("http://h/", (), 1, 1, client="aiohttp").resolved_client == "aiohttp"
