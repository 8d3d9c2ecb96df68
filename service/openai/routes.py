"""The OpenAI API under /v1/: the cached routes, GET /v1/models passed through, and every other
/v1/ path a 404 (405 for a known path's other methods), each error in OpenAI's shape and every
answer with its cache headers."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import hdrs, web

from service.errors import InvalidInput, PredcacheError
from service.openai import headers as cache_headers
from service.openai.cache_control import cache_directives
from service.openai.calls import ROUTES, Route
from service.openai.errors import GatewayRefused, http_error, internal_error, openai_error
from service.openai.gateway import Gateway

log = logging.getLogger(__name__)

GATEWAY = web.AppKey("gateway", Gateway)
MODELS = "/v1/models"
UNKNOWN = "/v1/unknown"  # the endpoint label of every path no route takes: no new series per path

View = Callable[[web.Request], Awaitable[tuple[web.StreamResponse, str]]]


def add_gateway_routes(app: web.Application) -> None:
    """Before the app's own catch-all route: /v1/... is the gateway's, all of it."""
    for route in ROUTES:
        app.router.add_post(route.path, counted(route.path, completion_view(route)))
    app.router.add_get(MODELS, counted(MODELS, models))
    app.router.add_route(hdrs.METH_ANY, "/v1/{tail:.*}", counted(UNKNOWN, unknown))


def completion_view(route: Route) -> View:
    async def view(request: web.Request) -> tuple[web.StreamResponse, str]:
        gateway = request.app[GATEWAY]
        directives = cache_directives(request.headers.get(hdrs.CACHE_CONTROL))
        body = await request.read()
        model_input = gateway.decode(route, body, request.headers.get(hdrs.AUTHORIZATION))
        return await gateway.answer(request, model_input, directives)

    return view


async def models(request: web.Request) -> tuple[web.StreamResponse, str]:
    return await request.app[GATEWAY].models(request.headers.get(hdrs.AUTHORIZATION)), "BYPASS"


async def unknown(request: web.Request) -> tuple[web.StreamResponse, str]:
    allowed = {hdrs.METH_POST} if request.path in {route.path for route in ROUTES} else set()
    if request.path == MODELS:
        allowed = {hdrs.METH_GET}
    if allowed:
        refused = GatewayRefused(
            405, f"{request.method} {request.path} is not allowed", code="method_not_allowed"
        )
        response = _error(refused, request)
        response.headers[hdrs.ALLOW] = ",".join(sorted(allowed))
        return response, "ERROR"
    raise GatewayRefused(404, f"no such route: {request.method} {request.path}", code="unknown_url")


def counted(endpoint: str, view: View) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """`view`, counted by endpoint and status and by route and X-Cache, its errors in OpenAI's shape."""

    async def answer(request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        try:
            response, cache = await view(request)
        except Exception as exc:
            response, cache = _error(exc, request), "ERROR"
        metrics = request.app[GATEWAY].metrics
        metrics.http.observe(endpoint, response.status, time.perf_counter() - started)
        metrics.llm.requests.labels(endpoint.removeprefix("/v1/"), cache).inc()
        return response

    return answer


def _error(exc: Exception, request: web.Request) -> web.Response:
    if isinstance(exc, PredcacheError):
        response = openai_error(exc)
        # Refused before the cache was asked, or an answer that went (or waited) upstream.
        refused = isinstance(exc, GatewayRefused | InvalidInput)
        response.headers.update(cache_headers.REFUSED if refused else cache_headers.UPSTREAM_ERROR)
        return response
    if isinstance(exc, web.HTTPException) and exc.status >= 400:
        response = http_error(exc)
        response.headers.update(cache_headers.REFUSED)
        return response
    log.error("unexpected error answering %s %s", request.method, request.rel_url, exc_info=exc)
    response = internal_error()
    response.headers.update(cache_headers.UPSTREAM_ERROR)
    return response
