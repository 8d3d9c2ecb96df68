"""Small aiohttp servers on loopback, each in its own thread, for the load tester to hit."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator

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


def routes_app() -> web.Application:
    app = web.Application()
    app.router.add_get("/fast", fast)
    app.router.add_get("/slow", slow)
    app.router.add_get("/fail", failing)
    app.router.add_get("/hang", hanging)
    return app


@pytest.fixture(scope="session")
def server() -> Iterator[str]:
    """Base URL of a server with /fast, /slow, /fail and /hang."""
    running = ThreadedServer(routes_app())
    running.start()
    yield running.url
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
