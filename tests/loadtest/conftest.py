"""Small aiohttp servers on loopback, each in its own thread, for the load tester to hit."""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from aiohttp import web

# pair -> (X-Cache, Cache-Status); None leaves the header out.
CACHE_HEADERS: dict[str, tuple[str | None, str | None]] = {
    "HIT": ("HIT", "predcache; hit; ttl=3"),
    "MISS": ("MISS", "predcache; fwd=uri-miss; stored"),
    "COLLAPSED": ("MISS", "predcache; fwd=uri-miss; collapsed"),
    "STALE": ("STALE", "predcache; hit; fwd=stale"),
    "NONE": (None, None),
}
# pair -> how long /slow takes to answer it, and the X-Cache it answers with.
SLOW_PAIRS_S: dict[str, tuple[float, str]] = {"FAST": (0.020, "HIT"), "SLOW": (0.080, "MISS")}
STALL_S = 0.4
STALL_EVERY_S = 1.0


class ThreadedServer:
    """An aiohttp app served on a free loopback port by an event loop in a background thread.

    The load tester runs its own event loop (`main()` calls `uvloop.run`), so the server cannot share
    the test's loop.
    """

    def __init__(self, app: web.Application) -> None:
        self._app = app
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=0.1)
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)

    async def _start(self) -> None:
        await self._runner.setup()
        await web.SockSite(self._runner, self._sock).start()

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


def _cache_headers(request: web.Request) -> dict[str, str]:
    x_cache, cache_status = CACHE_HEADERS.get(request.query.get("pair", "HIT"), ("HIT", None))
    headers = {}
    if x_cache is not None:
        headers["X-Cache"] = x_cache
    if cache_status is not None:
        headers["Cache-Status"] = cache_status
    return headers


async def fast(request: web.Request) -> web.Response:
    return web.json_response({"pair": request.query.get("pair")}, headers=_cache_headers(request))


async def slow(request: web.Request) -> web.Response:
    delay_s, x_cache = SLOW_PAIRS_S[request.query["pair"]]
    await asyncio.sleep(delay_s)
    return web.json_response({"pair": request.query["pair"]}, headers={"X-Cache": x_cache})


async def failing(request: web.Request) -> web.Response:
    return web.json_response({"error": {"code": "model_error", "message": "boom"}}, status=503)


async def hanging(request: web.Request) -> web.Response:
    await asyncio.sleep(5)
    return web.Response(text="too late")


def stalling_app() -> web.Application:
    """A server that freezes for STALL_S every STALL_EVERY_S, like a stop-the-world pause."""
    next_stall_at: list[float] = []

    async def handler(request: web.Request) -> web.Response:
        now = time.monotonic()
        if not next_stall_at:
            next_stall_at.append(now + STALL_EVERY_S / 2)
        elif now >= next_stall_at[0]:
            # Blocking the event loop freezes every connection, not just this request.
            time.sleep(STALL_S)  # noqa: ASYNC251
            next_stall_at[0] = time.monotonic() + STALL_EVERY_S
        return web.Response(text="ok", headers={"X-Cache": "HIT"})

    app = web.Application()
    app.router.add_get("/stall", handler)
    return app


# A batch item's pair -> the result the fake batch endpoint gives it; the cache classes of CACHE_HEADERS
# as the batch contract spells them, and items that fail on their own.
BATCH_RESULTS: dict[str, dict[str, Any]] = {
    "HIT": {"status": 200, "cache": "HIT"},
    "MISS": {"status": 200, "cache": "MISS"},
    "COLLAPSED": {"status": 200, "cache": "collapsed"},
    "STALE": {"status": 200, "cache": "STALE"},
    "UNKNOWN": {"status": 404, "error": {"code": "unknown_input", "message": "no such pair"}},
    "BROKEN": {"status": 503, "error": {"code": "model_error", "message": "boom"}},
}
MAX_BATCH_ITEMS = 1000
# Every body the POST endpoints received, decoded, in the app of `predict_app`.
RECEIVED = web.AppKey("received", list[Any])


def _invalid(message: str) -> web.Response:
    return web.json_response({"error": {"code": "invalid_input", "message": message}}, status=400)


async def _json_object_body(request: web.Request) -> Any:
    if request.content_type != "application/json":
        raise web.HTTPUnsupportedMediaType(text=f"not JSON: {request.content_type}")
    body = json.loads(await request.read())
    request.app[RECEIVED].append(body)
    return body


async def predict_post(request: web.Request) -> web.Response:
    """POST /predict: the class of the body's `pair`, as GET /fast gives it for the query's."""
    body = await _json_object_body(request)
    if not isinstance(body, dict):
        return _invalid("the body must be a JSON object")
    x_cache, cache_status = CACHE_HEADERS.get(str(body.get("pair", "HIT")), ("HIT", None))
    headers = {"X-Cache": x_cache} if x_cache is not None else {}
    if cache_status is not None:
        headers["Cache-Status"] = cache_status
    return web.json_response({"input": body}, headers=headers)


async def predict_batch(request: web.Request) -> web.Response:
    """POST /predict/batch as the service's contract has it: results in order, each item's status and
    class from its `pair` (BATCH_RESULTS); any invalid item (not an object, or `pair` "INVALID") or
    more than MAX_BATCH_ITEMS is a 400 for the whole batch."""
    body = await _json_object_body(request)
    inputs = body.get("inputs") if isinstance(body, dict) else None
    if not isinstance(inputs, list) or len(inputs) > MAX_BATCH_ITEMS:
        return _invalid(f"inputs must be a list of at most {MAX_BATCH_ITEMS}")
    if any(not isinstance(item, dict) or item.get("pair") == "INVALID" for item in inputs):
        return _invalid("invalid items")
    results = []
    for item in inputs:
        result = dict(BATCH_RESULTS.get(str(item.get("pair", "HIT")), BATCH_RESULTS["HIT"]))
        if result["status"] == 200:
            result["prediction"] = {"input": item}
        results.append(result)
    return web.json_response({"results": results})


def caching_app() -> web.Application:
    """POST /predict and /predict/batch with a real cache's classes: an input's first request is a
    MISS, every later one a HIT, so the hit ratio is what the inputs' popularity gives."""
    seen: set[str] = set()

    def lookup(item: object) -> bool:
        key = json.dumps(item, sort_keys=True)
        # No await between the check and the add: concurrent requests for one key cannot both miss.
        hit = key in seen
        seen.add(key)
        return hit

    async def single(request: web.Request) -> web.Response:
        hit = lookup(await _json_object_body(request))
        return web.json_response({}, headers={"X-Cache": "HIT" if hit else "MISS"})

    async def batch(request: web.Request) -> web.Response:
        inputs = (await _json_object_body(request))["inputs"]
        results = [{"status": 200, "cache": "HIT" if lookup(item) else "MISS"} for item in inputs]
        return web.json_response({"results": results})

    app = web.Application()
    app[RECEIVED] = []
    app.router.add_post("/predict", single)
    app.router.add_post("/predict/batch", batch)
    return app


def routes_app() -> web.Application:
    app = web.Application()
    app[RECEIVED] = []
    app.router.add_get("/fast", fast)
    app.router.add_get("/slow", slow)
    app.router.add_get("/fail", failing)
    app.router.add_get("/hang", hanging)
    app.router.add_post("/predict", predict_post)
    app.router.add_post("/predict/batch", predict_batch)
    app.router.add_post("/fail", failing)
    app.router.add_post("/hang", hanging)
    return app


@pytest.fixture(scope="session")
def server() -> Iterator[str]:
    """Base URL of a server with /fast, /slow, /fail and /hang, and POST /predict and /predict/batch."""
    running = ThreadedServer(routes_app())
    running.start()
    yield running.url
    running.stop()


@pytest.fixture
def predict_server() -> Iterator[tuple[str, list[Any]]]:
    """A routes_app for one test: its base URL and the bodies its POST endpoints received."""
    app = routes_app()
    running = ThreadedServer(app)
    running.start()
    yield running.url, app[RECEIVED]
    running.stop()


@pytest.fixture
def serve() -> Iterator[Callable[[web.Application], str]]:
    """Start an app for one test only; returns its base URL."""
    started: list[ThreadedServer] = []

    def start(app: web.Application) -> str:
        running = ThreadedServer(app)
        running.start()
        started.append(running)
        return running.url

    yield start
    for running in started:
        running.stop()


# Raw HTTP/1.1 answers, for what an aiohttp server will not send: chunks split across packets,
# bodies framed by closing the connection, resets in the middle of a response, garbage.
RawScript = Callable[[asyncio.StreamWriter], Awaitable[None]]
CHUNKED_BODY = b"hello, chunked world"


async def _chunked(writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Cache: HIT\r\n\r\n6\r\nhello,")
    await writer.drain()
    await asyncio.sleep(0.002)  # the client must put the pieces together
    writer.write(b"\r\n8\r\n chunked\r\n6\r\n world\r\n0\r\nX-Trailer: yes\r\n\r\n")


async def _chunk_extension(writer: asyncio.StreamWriter) -> None:
    # Not in _chunked: aiohttp 3.14's client waits forever on a chunk extension.
    writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;name=value\r\nabc\r\n0\r\n\r\n")


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.write(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n"
        b"Cache-Status: predcache; fwd=uri-miss; stored\r\n\r\nok"
    )
    await writer.drain()
    writer.close()


async def _until_close(writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nX-Cache: STALE\r\n\r\nfive!")
    await writer.drain()
    writer.close()


async def _reset_before_head(writer: asyncio.StreamWriter) -> None:
    _reset(writer)


async def _reset_in_body(writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nX-Cache: HIT\r\n\r\nonly ten b")
    await writer.drain()
    await asyncio.sleep(0.01)
    _reset(writer)


async def _garbage(writer: asyncio.StreamWriter) -> None:
    writer.write(b"SPEAKING GOPHER\r\n\r\n")


async def _hang(writer: asyncio.StreamWriter) -> None:
    await asyncio.sleep(5)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset (SO_LINGER 0), as a crashing server does, instead of an orderly FIN."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


RAW_SCRIPTS: dict[str, RawScript] = {
    "/chunked": _chunked,
    "/chunk-extension": _chunk_extension,
    "/close": _close,
    "/until-close": _until_close,
    "/reset-before-head": _reset_before_head,
    "/reset-in-body": _reset_in_body,
    "/garbage": _garbage,
    "/hang": _hang,
}


class RawServer:
    """Answers each request on a keep-alive connection with the script for its path (RAW_SCRIPTS),
    from an event loop in a background thread; counts the connections it accepted."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self.port = 0
        self.connections = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, "127.0.0.1", 0), self._loop
        ).result(timeout=10)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while not writer.is_closing():
                head = await reader.readuntil(b"\r\n\r\n")
                path = head.split(b" ", 2)[1].decode().partition("?")[0]
                await RAW_SCRIPTS[path](writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def stop(self) -> None:
        async def close(server: asyncio.Server) -> None:
            server.close()
            handlers = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in handlers:
                task.cancel()
            await asyncio.gather(*handlers, return_exceptions=True)

        if self._server is not None:
            asyncio.run_coroutine_threadsafe(close(self._server), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


@pytest.fixture
def raw_server() -> Iterator[RawServer]:
    """A RawServer for one test, so its connection count is the test's own."""
    running = RawServer()
    running.start()
    yield running
    running.stop()
