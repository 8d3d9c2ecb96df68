"""How answers and errors become HTTP responses: predictions with their cache headers, and every
error, ours or aiohttp's, as the same JSON shape."""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence

import orjson
from aiohttp import hdrs, web
from multidict import CIMultiDict

from service.caching.entry import CachedPrediction
from service.caching.freshness import Outcome
from service.caching.predictions import Answer
from service.errors import FieldError, InvalidInput, ModelError, PredcacheError, UpstreamRefused

log = logging.getLogger(__name__)

JSON = "application/json"
# Entries whose hit headers are kept at most; past it the memo starts again (the next hits rebuild
# theirs). Headers past their tick go before that (see HitHeaders).
HIT_HEADERS_ENTRIES = 4096


class HitHeaders:
    """The headers of a hit. They change only when the entry's age or remaining TTL, both whole
    seconds, tick over, so they are built once per entry and tick rather than on every request."""

    def __init__(self, *, grace_s: float, clock: Callable[[], float]) -> None:
        self._swr = f"stale-while-revalidate={int(grace_s)}"
        self._clock = clock
        # key -> (the entry's time and freshness, until when its headers hold, the headers), in the
        # order they were built. Not the entry itself: the memo must not keep alive a prediction the
        # caches have let go.
        self._built: OrderedDict[str, tuple[float, float, float, CIMultiDict[str]]] = OrderedDict()

    def __call__(self, entry: CachedPrediction) -> CIMultiDict[str]:
        now = self._clock()
        built = self._built.get(entry.key)
        # The entry's times, not only its key: a refreshed entry has other headers.
        if (
            built is not None
            and now < built[2]
            and built[0] == entry.predicted_at
            and built[1] == entry.fresh_s
        ):
            return built[3]
        expires_at = entry.predicted_at + entry.fresh_s
        age = max(0, int(now - entry.predicted_at))
        ttl_left = max(0, int(expires_at - now))
        # The next tick of either: the age's next whole second, or the TTL's next lower one.
        until = min(entry.predicted_at + age + 1, expires_at - ttl_left)
        headers = CIMultiDict(
            {
                hdrs.CONTENT_TYPE: JSON,
                "X-Cache": "HIT",
                hdrs.AGE: str(age),
                "Cache-Status": f"predcache; hit; ttl={ttl_left}",
                hdrs.CACHE_CONTROL: f"max-age={ttl_left}, {self._swr}",
            }
        )
        memo = self._built
        memo.pop(entry.key, None)
        # Headers past their tick are of no more use. Built at most a second before their tick, the
        # oldest are the first past it: dropped, the memo holds about the last second's hits, not
        # one set of headers per key ever hit.
        while memo and next(iter(memo.values()))[2] <= now:
            memo.popitem(last=False)
        if len(memo) >= HIT_HEADERS_ENTRIES:
            memo.clear()
        memo[entry.key] = (entry.predicted_at, entry.fresh_s, until, headers)
        return headers

    def __len__(self) -> int:
        return len(self._built)


def prediction_response(answer: Answer, hit_headers: HitHeaders) -> web.Response:
    entry = answer.entry
    if answer.outcome is Outcome.HIT:
        # aiohttp copies the headers into the response's own: the memo's stay as built.
        return web.Response(body=entry.body, headers=hit_headers(entry))
    headers = CIMultiDict(hit_headers(entry))
    headers["X-Cache"] = answer.outcome.value
    if answer.outcome is Outcome.STALE:
        headers["Cache-Status"] = "predcache; hit; fwd=stale"
    else:
        # RFC 9211: `request` when the client's own Cache-Control sent it to the model.
        cache_status = "predcache; fwd=request" if answer.forced else "predcache; fwd=uri-miss"
        if answer.collapsed:
            cache_status += "; collapsed"
        elif answer.stored:
            cache_status += "; stored"
        headers["Cache-Status"] = cache_status
    return web.Response(body=entry.body, headers=headers)


def error_for(exc: Exception, request: web.Request) -> web.Response:
    """The JSON response for an error raised while answering `request`; HTTPExceptions below 400
    (redirects) are raised again."""
    if isinstance(exc, UpstreamRefused):
        # The upstream model server's own answer to a bad input: its status and JSON body.
        return web.Response(status=exc.status, body=exc.body, headers={"Content-Type": exc.content_type})
    if isinstance(exc, PredcacheError):
        return predcache_error_response(exc)
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:
            raise exc
        # aiohttp's own (413 past MAX_BODY_BYTES, say) answer in the same JSON shape as ours.
        return error_response(exc.status, exc.reason.lower().replace(" ", "_"), exc.reason)
    log.error("unexpected error answering %s %s", request.method, request.rel_url, exc_info=exc)
    return error_response(500, "internal_error", "internal error")


def json_response(payload: object, *, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(payload), status=status, headers={"Content-Type": JSON})


def error_response(status: int, code: str, message: str) -> web.Response:
    return json_response({"error": {"code": code, "message": message}}, status=status)


def predcache_error_response(exc: PredcacheError) -> web.Response:
    response = json_response({"error": error_payload(exc)}, status=exc.status)
    response.headers.update(exc.response_headers())
    return response


def error_payload(exc: PredcacheError) -> dict[str, object]:
    """`{"code", "message"}`, and for an invalid input the fields at fault (maybe none) and, in a
    batch, the invalid inputs by index; for a model error the request id its log line carries."""
    error: dict[str, object] = {"code": exc.code, "message": exc.message}
    if isinstance(exc, ModelError) and exc.request_id is not None:
        error["request_id"] = exc.request_id
    if isinstance(exc, InvalidInput):
        error["fields"] = _fields(exc.fields)
        if exc.items:
            error["items"] = [
                {"index": item.index, "message": item.message, "fields": _fields(item.fields)}
                for item in exc.items
            ]
    return error


def _fields(fields: Sequence[FieldError]) -> list[dict[str, str]]:
    return [{"field": f.field, "message": f.message} for f in fields]
