"""The floor: a bare aiohttp app on uvloop returning a predcache hit's bytes.

`python -m benchmarks.floor_server --port P`.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import uvloop
from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CollectorRegistry, Counter, Histogram

# A predcache hit for ETH-EUR, body and headers as the service sends them (155 bytes of body).
BODY = (
    b'{"pair":"ETH-EUR","predicted_price":2946.85,"currency":"EUR","horizon_seconds":300,'
    b'"model_version":"demo-1","predicted_at":"2026-11-24T19:23:43.008+00:00"}'
)
HEADERS = {
    "Content-Type": "application/json",
    "X-Cache": "HIT",
    "Age": "0",
    "Cache-Status": "predcache; hit; ttl=4",
    "Cache-Control": "max-age=4, stale-while-revalidate=5",
}


async def predict(request: web.Request) -> web.Response:
    return web.Response(body=BODY, headers=HEADERS)


async def predict_post(request: web.Request) -> web.Response:
    """The same bytes for a POST, once its body is read: what aiohttp alone charges for a body."""
    await request.read()
    return web.Response(body=BODY, headers=HEADERS)


async def predict_formatting_headers(request: web.Request) -> web.Response:
    """The same bytes, with the per-hit header formatting predcache does (Age, Cache-Status, ...)."""
    ttl_left = int(4.9)
    return web.Response(
        body=BODY,
        headers={
            "Content-Type": "application/json",
            "X-Cache": "HIT",
            "Age": str(max(0, int(time.time() - time.time()))),
            "Cache-Status": f"predcache; hit; ttl={ttl_left}",
            "Cache-Control": f"max-age={ttl_left}, stale-while-revalidate={int(5.0)}",
        },
    )


@web.middleware
async def passthrough(request: web.Request, handler: Handler) -> web.StreamResponse:
    return await handler(request)


def counting(handler: Handler) -> Handler:
    """`handler` plus what predcache's metrics do on a hit: two counters and a histogram."""
    registry = CollectorRegistry()
    requests = Counter("requests", "", ["endpoint", "status"], registry=registry).labels("/predict", "200")
    hits = Counter("hits", "", registry=registry)
    duration = Histogram("duration_seconds", "", ["endpoint"], registry=registry).labels("/predict")

    async def counted(request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        response = await handler(request)
        hits.inc()
        requests.inc()
        duration.observe(time.perf_counter() - started)
        return response

    return counted


def create_app(
    *, middlewares: int = 0, format_headers: bool = False, prometheus: bool = False
) -> web.Application:
    """The floor; `middlewares` no-op middlewares, `format_headers` and `prometheus` measure their cost."""
    app = web.Application(middlewares=[passthrough] * middlewares)
    handler: Handler = predict_formatting_headers if format_headers else predict
    app.router.add_get("/predict", counting(handler) if prometheus else handler)
    app.router.add_post("/predict", predict_post)
    return app


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--middlewares", type=int, default=0, help="no-op middlewares, for attribution")
    parser.add_argument("--format-headers", action="store_true", help="format headers per request")
    parser.add_argument("--prometheus", action="store_true", help="count and time requests per request")
    args = parser.parse_args(argv)
    web.run_app(
        create_app(
            middlewares=args.middlewares, format_headers=args.format_headers, prometheus=args.prometheus
        ),
        host=args.host,
        port=args.port,
        access_log=None,
        print=None,
        loop=uvloop.new_event_loop(),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
