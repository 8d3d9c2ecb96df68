"""The floor: a bare aiohttp app on uvloop returning a predcache hit's bytes.

`python -m benchmarks.floor_server --port P`.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import uvloop
from aiohttp import web

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


def create_app() -> web.Application:
    app = web.Application()
    app.router.add_get("/predict", predict)
    return app


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    web.run_app(
        create_app(),
        host=args.host,
        port=args.port,
        access_log=None,
        print=None,
        loop=uvloop.new_event_loop(),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
