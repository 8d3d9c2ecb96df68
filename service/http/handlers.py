"""HTTP views: decode the request, ask the domain, encode the answer. No Redis or model calls here."""

from __future__ import annotations

import hmac
import re
import time

import orjson
from aiohttp import hdrs, web

from service.caching.backends import MemoryBackend, RedisBackend
from service.caching.freshness import ANY_AGE, Freshness
from service.caching.predictions import Answer, Predictions
from service.errors import (
    AdminApiOff,
    CacheUnavailable,
    ClientClosedRequest,
    InvalidCacheControl,
    PredcacheError,
    Unauthorized,
    UnsupportedMediaType,
)
from service.http import appkeys as keys
from service.http.api_docs import ASSETS, DOCS_PAGE
from service.http.front_page import prefers_html
from service.http.responses import (
    JSON,
    HitHeaders,
    error_for,
    error_payload,
    json_response,
    prediction_response,
)
from service.metrics import CONTENT_TYPE_LATEST, LatencyHistogram, RequestMetrics, Tally
from service.models.inputs import InputCodec, ModelInput

# The label of /predict in predcache_requests_total and predcache_request_duration_seconds.
PREDICT = "/predict"
_SECONDS = re.compile(r"[0-9]{1,10}")


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


class Predict:
    """GET /predict?field=value&... (the query parameters are the input's fields) and POST /predict
    with the input as a JSON object; both share cache entries.

    The hit path. Unlike the other views (see routes.py) these count themselves and turn their own
    errors into responses, since a wrapper would cost every hit a coroutine frame; what they need is
    looked up once, at startup; inputs are remembered by their raw text (InputCodec.recent); and a
    plain hit from the near-cache skips the freshness rules and the formatting of its headers (see
    Predictions.plain_hit and HitHeaders).
    """

    _inputs: InputCodec
    _predictions: Predictions
    _hit_headers: HitHeaders
    _http: RequestMetrics
    _ok: tuple[Tally, LatencyHistogram]

    async def bind(self, app: web.Application) -> None:
        """An on_startup hook, run after the cleanup contexts have made what it looks up."""
        self._inputs = app[keys.INPUTS]
        self._predictions = app[keys.PREDICTIONS]
        self._hit_headers = app[keys.HIT_HEADERS]
        self._http = app[keys.METRICS].http
        self._ok = self._http.series(PREDICT, 200)

    async def get(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        try:
            raw = request.query_string
            model_input = self._inputs.recent(raw) or self._inputs.from_query(request.query, raw=raw)
            # A response is never falsy (aiohttp's StreamResponse defines __bool__).
            response = self._plain_hit(request, model_input) or await self._answer(request, model_input)
        except Exception as exc:
            response = error_for(exc, request)
        return self._counted(response, started)

    async def post(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        try:
            body = await json_body(request)
            model_input = self._inputs.recent(body) or self._inputs.from_json(body)
            # A response is never falsy (aiohttp's StreamResponse defines __bool__).
            response = self._plain_hit(request, model_input) or await self._answer(request, model_input)
        except Exception as exc:
            response = error_for(exc, request)
        return self._counted(response, started)

    def _plain_hit(self, request: web.Request, model_input: ModelInput) -> web.Response | None:
        if hdrs.CACHE_CONTROL in request.headers:
            return None  # the client's own freshness rules: Predictions.get applies them
        entry = self._predictions.plain_hit(model_input)
        return None if entry is None else web.Response(body=entry.body, headers=self._hit_headers(entry))

    async def _answer(self, request: web.Request, model_input: ModelInput) -> web.Response:
        answer = await self._predictions.get(model_input, freshness_from_headers(request))
        return prediction_response(answer, self._hit_headers)

    def _counted(self, response: web.Response, started: float) -> web.Response:
        duration_s = time.perf_counter() - started
        if response.status == 200:
            requests, latencies = self._ok
            requests.value += 1
            latencies.observe(duration_s)
        else:
            self._http.observe(PREDICT, response.status, duration_s)
        return response


async def predict_batch(request: web.Request) -> web.Response:
    """POST /predict/batch with `{"inputs": [...]}`: a result per input, in order."""
    inputs = request.app[keys.INPUTS].from_batch(
        await json_body(request), max_items=request.app[keys.SETTINGS].max_batch_items
    )
    answers = await request.app[keys.PREDICTIONS].get_many(inputs, freshness_from_headers(request))
    return json_response({"results": [batch_result(answer) for answer in answers]})


def batch_result(answer: Answer | PredcacheError) -> dict[str, object]:
    if isinstance(answer, PredcacheError):
        return {"status": answer.status, "error": error_payload(answer)}
    cache = "collapsed" if answer.collapsed else answer.outcome.value
    # The stored body goes out as it is, embedded without decoding it.
    return {"status": 200, "cache": cache, "prediction": orjson.Fragment(answer.entry.body)}


async def json_body(request: web.Request) -> bytes:
    """The request body, if it says it is JSON; aiohttp answers 413 past MAX_BODY_BYTES."""
    # The header as sent, when it is exactly JSON's, spares parsing it (a POST hit's dearest step).
    if request.headers.get(hdrs.CONTENT_TYPE) != JSON and (
        request.content_type != JSON and not request.content_type.endswith("+json")
    ):
        raise UnsupportedMediaType(
            f"the body must be JSON (Content-Type: {JSON}), not {request.content_type}"
        )
    try:
        return await request.read()
    except ConnectionResetError:
        # aiohttp's "Connection lost": the client's doing, not a server error to log with a traceback.
        raise ClientClosedRequest("the client closed the connection before sending its whole body") from None


def require_admin(request: web.Request) -> None:
    """Admin endpoints exist only with ADMIN_TOKEN set, and need it as a bearer token."""
    token = request.app[keys.SETTINGS].admin_token
    if token is None:
        raise AdminApiOff()
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    # compare_digest takes the same time wherever the strings differ: no guessing by timing.
    # aiohttp decodes header bytes with surrogateescape; encode them back the same way.
    given_bytes = given.strip().encode("utf-8", "surrogateescape")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given_bytes, token.encode()):
        raise Unauthorized("this endpoint needs Authorization: Bearer <ADMIN_TOKEN>")


async def invalidate_pair(request: web.Request) -> web.Response:
    """DELETE /cache/{pair}: forget the prediction for the input `{"pair": ...}` (other fields at
    their defaults) on every replica."""
    require_admin(request)
    model_input = request.app[keys.INPUTS].from_object({"pair": request.match_info["pair"]})
    predictions = request.app[keys.PREDICTIONS]
    predictions.runner.check(model_input)
    if not await predictions.invalidation.forget(predictions.key_for(model_input)):
        raise CacheUnavailable(f"could not reach the cache to invalidate {model_input}; nothing changed")
    # The pair as the input type normalized it, whatever the input type is (a model, a dict).
    return json_response({"invalidated": orjson.loads(model_input.canonical)["pair"]})


async def invalidate_all(request: web.Request) -> web.Response:
    require_admin(request)
    if not await request.app[keys.PREDICTIONS].invalidation.forget_all():
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
    payload: dict[str, object] = {
        "status": "ready",
        "model": {"version": predictions.runner.version},
        "cache": "disabled" if cache is None else cache.state,
        # While the cache is degraded, predictions come from this replica's own copies.
        "local_cache": {
            "entries": len(predictions.near),
            "serving": cache is not None and cache.state != "ok",
        },
        "in_flight": len(predictions.in_flight),
        # What the byte bounds count (footprint.py): NEAR_CACHE_MAX_BYTES, CACHE_MAX_BYTES.
        "memory": {"near_cache_bytes": predictions.near.memory_bytes},
    }
    if isinstance(cache, MemoryBackend):
        payload["memory"] = {
            "near_cache_bytes": predictions.near.memory_bytes,
            "embedded_cache_bytes": cache.memory_bytes,
            "embedded_cache_entries": len(cache),
        }
    if isinstance(cache, RedisBackend):
        payload["redis"] = await cache.describe()  # mode, nodes, how many answer
    return json_response(payload)


async def front_page(request: web.Request) -> web.Response:
    """GET /: HTML when the client prefers it (a browser), else JSON."""
    page = request.app[keys.FRONT_PAGE]
    html = prefers_html(request.headers.get(hdrs.ACCEPT))
    return web.Response(
        body=page.html if html else page.json,
        headers={hdrs.CONTENT_TYPE: "text/html; charset=utf-8" if html else JSON, hdrs.VARY: hdrs.ACCEPT},
    )


async def api_docs(request: web.Request) -> web.Response:
    return web.Response(body=DOCS_PAGE, headers={hdrs.CONTENT_TYPE: "text/html; charset=utf-8"})


async def api_docs_asset(request: web.Request) -> web.FileResponse:
    """A file of Swagger UI; the route's pattern admits only the names in ASSETS."""
    path, content_type = ASSETS[request.match_info["asset"]]
    return web.FileResponse(path, headers={hdrs.CONTENT_TYPE: content_type})


async def openapi_spec(request: web.Request) -> web.Response:
    return web.Response(body=request.app[keys.OPENAPI], headers={"Content-Type": JSON})


async def metrics(request: web.Request) -> web.Response:
    return web.Response(
        body=request.app[keys.METRICS].render(), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )
