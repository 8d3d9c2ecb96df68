"""HTTP views: decode the request, ask the domain, encode the answer. No Redis or model calls here."""

from __future__ import annotations

import hmac
import re
import time

import orjson
from aiohttp import web

from service import keys
from service.errors import CacheUnavailable, InvalidCacheControl, InvalidPair, Unauthorized, UnknownPair
from service.metrics import CONTENT_TYPE_LATEST
from service.openapi import openapi_spec
from service.pair import parse_pair
from service.predictions import ANY_AGE, Answer, Freshness, Outcome, Predictions

JSON = "application/json"
_SECONDS = re.compile(r"[0-9]{1,10}")


def pair_from_query(request: web.Request) -> str:
    values = request.query.getall("pair", [])
    if not values:
        raise InvalidPair("the pair parameter is missing; expected e.g. /predict?pair=ETH-EUR")
    if len(values) > 1:
        raise InvalidPair("the pair parameter is given more than once")
    return parse_pair(values[0])


def freshness_from_headers(request: web.Request) -> Freshness:
    """The client's Cache-Control: `no-cache` and `max-age=N`; other directives are ignored."""
    header = request.headers.get("Cache-Control")
    if not header:
        return ANY_AGE
    no_cache = False
    max_age_s: float | None = None
    for directive in header.lower().split(","):
        name, _, value = directive.strip().partition("=")
        if name == "no-cache":
            no_cache = True
        elif name == "max-age":
            seconds = value.strip('"')
            # ASCII digits only: str.isdigit() also accepts "³", which int() then refuses.
            if not _SECONDS.fullmatch(seconds):
                raise InvalidCacheControl(f"max-age must be a whole number of seconds, got {value!r}")
            max_age_s = float(seconds)
    return Freshness(no_cache=no_cache, max_age_s=max_age_s)


async def predict(request: web.Request) -> web.Response:
    pair = pair_from_query(request)
    predictions = request.app[keys.PREDICTIONS]
    answer = await predictions.get(pair, freshness_from_headers(request))
    return prediction_response(answer, predictions)


def prediction_response(answer: Answer, predictions: Predictions) -> web.Response:
    entry = answer.entry
    ttl_left = int(predictions.ttl_left_s(entry))
    if answer.outcome is Outcome.HIT:
        cache_status = f"predcache; hit; ttl={ttl_left}"
    elif answer.outcome is Outcome.STALE:
        cache_status = "predcache; hit; fwd=stale"
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
            "Cache-Control": f"max-age={ttl_left}, stale-while-revalidate={int(predictions.grace_s)}",
        },
    )


def require_admin(request: web.Request) -> None:
    """Admin endpoints exist only with ADMIN_TOKEN set, and need it as a bearer token."""
    token = request.app[keys.SETTINGS].admin_token
    if token is None:
        raise web.HTTPNotFound()
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    # compare_digest takes the same time wherever the strings differ: no guessing by timing.
    # aiohttp decodes header bytes with surrogateescape; encode them back the same way.
    given_bytes = given.strip().encode("utf-8", "surrogateescape")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given_bytes, token.encode()):
        raise Unauthorized("this endpoint needs Authorization: Bearer <ADMIN_TOKEN>")


async def invalidate_pair(request: web.Request) -> web.Response:
    require_admin(request)
    pair = parse_pair(request.match_info["pair"])
    predictions = request.app[keys.PREDICTIONS]
    if not predictions.runner.supports(pair):
        raise UnknownPair(pair)
    if not await predictions.invalidate(pair):
        raise CacheUnavailable(f"could not reach the cache to invalidate {pair}; nothing changed")
    return json_response({"invalidated": pair})


async def invalidate_all(request: web.Request) -> web.Response:
    require_admin(request)
    if not await request.app[keys.PREDICTIONS].invalidate_all():
        raise CacheUnavailable("could not reach the cache to invalidate it; nothing changed")
    return json_response({"invalidated": "all"})


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
    app.router.add_get("/openapi.json", openapi_spec)
    app.router.add_delete("/cache", invalidate_all)
    app.router.add_delete("/cache/{pair}", invalidate_pair)
