"""The request middleware: domain errors become JSON error responses, and every request is counted.

One middleware rather than two: each layer costs a coroutine frame on every request, hits included.
"""

from __future__ import annotations

import logging
import time

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

from service import keys
from service.errors import PredcacheError, UpstreamRefused
from service.handlers import error_response, predcache_error_response

log = logging.getLogger(__name__)


@web.middleware
async def errors_and_metrics(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    try:
        response = await handler(request)
    except UpstreamRefused as exc:
        # The upstream model server's own answer to a bad input: its status and JSON body, no headers.
        response = web.Response(status=exc.status, body=exc.body, headers={"Content-Type": exc.content_type})
    except PredcacheError as exc:
        response = predcache_error_response(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        # Unknown paths and methods answer in the same JSON shape as everything else.
        response = error_response(exc.status, exc.reason.lower().replace(" ", "_"), exc.reason)
        # A 405 must say which methods the resource has (RFC 9110, 15.5.6); aiohttp's exception
        # carries that in its own headers, which the JSON response would otherwise drop.
        if (allow := exc.headers.get(hdrs.ALLOW)) is not None:
            response.headers[hdrs.ALLOW] = allow
    except Exception:
        log.exception("unexpected error answering %s %s", request.method, request.rel_url)
        response = error_response(500, "internal_error", "internal error")
    resource = request.match_info.route.resource
    # Label by route, never by raw path: unknown paths must not create new time series.
    endpoint = resource.canonical if resource is not None else "unmatched"
    request.app[keys.METRICS].observe_request(endpoint, response.status, time.perf_counter() - started)
    return response
