"""The routes, each view counted and its errors answered as JSON, and unknown paths and methods
answered in the same JSON shape.

No middleware: aiohttp would wrap every request in two more coroutine frames (ours and its own
current-app fixer), hits included. Each view is wrapped here instead, except the hit path
(`handlers.Predict`), which does the same itself.
"""

from __future__ import annotations

import time

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

from service.http import appkeys as keys
from service.http import handlers
from service.http.api_docs import ASSET_PATTERN
from service.http.responses import error_for, error_response

# The endpoint label of requests no route takes: unknown paths must not create new series.
UNMATCHED = "unmatched"
# What an LLM gateway keeps of the routes; the others describe or serve /predict (see gateway_only).
GATEWAY_KEEPS = frozenset({"/healthz", "/readyz", "/metrics", "/cache"})


def add_routes(app: web.Application, *, predict: bool = True) -> None:
    """The service's routes. With `predict` False (the LLM gateway, whose API is under /v1/), the
    prediction routes and the pages describing them answer 404 saying where the API is."""
    router = app.router
    if predict:
        view = handlers.Predict()
        app.on_startup.append(view.bind)
        router.add_get(handlers.PREDICT, view.get)
        router.add_post(handlers.PREDICT, view.post)
    else:
        router.add_route(hdrs.METH_ANY, handlers.PREDICT, answered(handlers.PREDICT, gateway_only))
    for method, path, handler in (
        (hdrs.METH_POST, "/predict/batch", handlers.predict_batch),
        (hdrs.METH_GET, "/healthz", handlers.healthz),
        (hdrs.METH_GET, "/readyz", handlers.readyz),
        (hdrs.METH_GET, "/metrics", handlers.metrics),
        (hdrs.METH_GET, "/openapi.json", handlers.openapi_spec),
        (hdrs.METH_GET, "/", handlers.front_page),
        (hdrs.METH_GET, "/docs", handlers.api_docs),
        (hdrs.METH_GET, f"/docs/{{asset:{ASSET_PATTERN}}}", handlers.api_docs_asset),
        (hdrs.METH_DELETE, "/cache", handlers.invalidate_all),
        (hdrs.METH_DELETE, "/cache/{pair}", handlers.invalidate_pair),
    ):
        if not predict and path not in GATEWAY_KEEPS:
            handler = gateway_only
        router.add_route(method, path, answered(path, handler))
    # Last: any path and method no route above takes.
    router.add_route(hdrs.METH_ANY, "/{path:.*}", answered(UNMATCHED, unmatched))


def answered(endpoint: str, view: Handler) -> Handler:
    """`view`, counted under `endpoint`, with any error it raises answered as JSON."""

    async def answer(request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        try:
            response = await view(request)
        except Exception as exc:
            response = error_for(exc, request)
        request.app[keys.METRICS].http.observe(endpoint, response.status, time.perf_counter() - started)
        return response

    return answer


async def gateway_only(request: web.Request) -> web.Response:
    """A prediction route, or a page describing them, of a service that is an OpenAI gateway
    (MODEL=openai+...): the OpenAI API is documented by OpenAI."""
    return error_response(
        404,
        "not_found",
        "this service is an OpenAI gateway: its API is POST /v1/chat/completions, /v1/completions, "
        "/v1/embeddings and GET /v1/models",
    )


async def unmatched(request: web.Request) -> web.Response:
    """404, or 405 with the methods the path has (RFC 9110, 15.5.6), as aiohttp's router would."""
    allowed: set[str] = set()
    for resource in request.app.router.resources():
        match, methods = await resource.resolve(request)
        if match is None:
            allowed |= methods
    if allowed:
        response = error_response(405, "method_not_allowed", "Method Not Allowed")
        response.headers[hdrs.ALLOW] = ",".join(sorted(allowed))
        return response
    return error_response(404, "not_found", "Not Found")
