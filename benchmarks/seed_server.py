"""The seed's naive design, as a baseline: cache-aside over Redis, no single-flight.

Every request does one redis.asyncio GET, decodes the JSON and encodes it again; a miss sleeps for the
model's latency and SETs with an expiry. `GET /calls` returns how many model calls it made.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import redis.asyncio as redis
import uvloop
from aiohttp import web


@dataclass
class SeedState:
    """What the seed keeps: its Redis client, its settings and a count of model calls."""

    redis: redis.Redis
    ttl_ms: int
    model_latency_s: float
    model_calls: int = 0


STATE = web.AppKey("state", SeedState)


async def predict_with_model(state: SeedState, pair: str) -> dict[str, object]:
    state.model_calls += 1
    await asyncio.sleep(state.model_latency_s)
    return {
        "pair": pair,
        "predicted_price": 2946.85,
        "currency": pair.split("-")[-1],
        "horizon_seconds": 300,
        "model_version": "seed-1",
        "predicted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


async def predict(request: web.Request) -> web.Response:
    state = request.app[STATE]
    pair = request.query.get("pair", "ETH-EUR").upper()
    key = f"prediction:{pair}"
    cached = await state.redis.get(key)
    if cached is not None:
        return web.json_response(json.loads(cached), headers={"X-Cache": "HIT"})
    prediction = await predict_with_model(state, pair)
    await state.redis.set(key, json.dumps(prediction), px=state.ttl_ms)
    return web.json_response(prediction, headers={"X-Cache": "MISS"})


async def calls(request: web.Request) -> web.Response:
    return web.json_response({"model_calls": request.app[STATE].model_calls})


def create_app(redis_url: str, ttl_s: float, model_latency_s: float) -> web.Application:
    app = web.Application()

    async def redis_client(app: web.Application) -> AsyncIterator[None]:
        # redis-py 8's default pool stops at 100 connections and fails the rest with "Too many
        # connections": a 1000-request stampede would count 500s instead of the model calls it costs.
        client = redis.Redis.from_url(redis_url, max_connections=4096)
        app[STATE] = SeedState(client, max(1, round(ttl_s * 1000)), model_latency_s)
        yield
        await client.aclose()

    app.cleanup_ctx.append(redis_client)
    app.router.add_get("/predict", predict)
    app.router.add_get("/calls", calls)
    return app


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--ttl", type=float, default=5.0, help="seconds a prediction stays in Redis")
    parser.add_argument("--model-latency", type=float, default=1.0, help="seconds per model call")
    parser.add_argument("--backlog", type=int, default=2048)
    args = parser.parse_args(argv)
    app = create_app(args.redis_url, args.ttl, args.model_latency)
    web.run_app(
        app, host=args.host, port=args.port, access_log=None, print=None, backlog=args.backlog,
        loop=uvloop.new_event_loop(),
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
