"""HTTP views: decode the request, ask the domain, encode the answer. No Redis or model calls here."""

from __future__ import annotations

import time

import orjson
from aiohttp import web

from service import keys
from service.errors import InvalidPair
from service.metrics import CONTENT_TYPE_LATEST
from service.pair import parse_pair
from service.predictions import Answer, Outcome

JSON = "application/json"


def pair_from_query(request: web.Request) -> str:
    values = request.query.getall("pair", [])
    if not values:
        raise InvalidPair("the pair parameter is missing; expected e.g. /predict?pair=ETH-EUR")
    if len(values) > 1:
        raise InvalidPair("the pair parameter is given more than once")
    return parse_pair(values[0])


async def predict(request: web.Request) -> web.Response:
    pair = pair_from_query(request)
    answer = await request.app[keys.PREDICTIONS].get(pair)
    return prediction_response(answer)


def prediction_response(answer: Answer) -> web.Response:
    entry = answer.entry
    ttl_left = int(answer.ttl_left_s)
    if answer.outcome is Outcome.HIT:
        cache_status = f"predcache; hit; ttl={ttl_left}"
    elif answer.collapsed:
        cache_status = "predcache; fwd=uri-miss; collapsed"
    else:
        cache_status = "predcache; fwd=uri-miss" + ("; stored" if answer.stored else "")
    return web.Response(
        body=entry.body,
        headers={
            "Content-Type": JSON,
            "X-Cache": answer.outcome.value,
            "Age": str(max(0, int(time.time() - entry.predicted_at))),
            "Cache-Status": cache_status,
            "Cache-Control": f"max-age={ttl_left}",
        },
    )


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready once the model is loaded; the cache state is informative, the service works without it."""
    app = request.app
    predictions = app.get(keys.PREDICTIONS)
    if predictions is None:
        return json_response({"status": "starting"}, status=503)
    cache = app[keys.CACHE]
    return json_response(
        {
            "status": "ready",
            "model": {"version": predictions.runner.version},
            "cache": "disabled" if cache is None else cache.state,
            "in_flight": len(predictions.in_flight),
        }
    )


async def metrics(request: web.Request) -> web.Response:
    return web.Response(
        body=request.app[keys.METRICS].render(), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


def json_response(payload: object, *, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(payload), status=status, headers={"Content-Type": JSON})


def error_response(status: int, code: str, message: str) -> web.Response:
    return json_response({"error": {"code": code, "message": message}}, status=status)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/predict", predict)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
