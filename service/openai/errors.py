"""What the gateway answers when it does not answer a completion: OpenAI's error shape,
`{"error": {"message", "type", "param", "code"}}`, for its own errors and for predcache's, and the
upstream's own refusals passed on as they came.

PredcacheError (service.errors)
├── GatewayRefused        4xx: the request is not one the gateway can serve (`type`, `param`)
└── UpstreamRefused       4xx: (service.errors) the upstream's refusal
    └── UpstreamAnswered  the same, with the headers the client needs (Retry-After), passed on as is
"""

from __future__ import annotations

import orjson
from aiohttp import web

from service.errors import InvalidInput, PredcacheError, UpstreamRefused

JSON = "application/json"
# The upstream's headers a client needs with its refusal: when to come back (429, 503).
PASSED_HEADERS = ("Retry-After", "retry-after-ms")


class GatewayRefused(PredcacheError):
    """A request the gateway refuses itself: a bad body, an unknown path, a missing token."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.type = type
        self.param = param
        self.code = code or "invalid_request"

    def response_headers(self) -> dict[str, str]:
        # RFC 9110, 11.6.1: a 401 says how to authenticate.
        return {"WWW-Authenticate": 'Bearer realm="predcache"'} if self.status == 401 else {}


class UpstreamAnswered(UpstreamRefused):
    """The upstream answered 4xx (401, 403, 429 and the rest): its status, body and the headers in
    PASSED_HEADERS reach the client as they came, and nothing is stored."""

    def __init__(self, status: int, body: bytes, content_type: str, headers: dict[str, str]) -> None:
        super().__init__(status, body, content_type, f"the upstream answered {status}")
        self.headers = headers


def bad_request(message: str, param: str | None = None) -> GatewayRefused:
    return GatewayRefused(400, message, param=param, code="invalid_request")


def error_body(message: str, type_: str, *, param: str | None = None, code: str | None = None) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": type_, "param": param, "code": code}})


def openai_error(exc: PredcacheError) -> web.Response:
    """`exc` as the answer an OpenAI client parses: the upstream's own answer for its refusals,
    else OpenAI's shape with predcache's status and code."""
    if isinstance(exc, UpstreamRefused):
        headers = {"Content-Type": exc.content_type}
        if isinstance(exc, UpstreamAnswered):
            headers.update(exc.headers)
        return web.Response(status=exc.status, body=exc.body, headers=headers)
    if isinstance(exc, GatewayRefused):
        body = error_body(exc.message, exc.type, param=exc.param, code=exc.code)
    else:
        param = None
        if isinstance(exc, InvalidInput) and exc.fields:
            param = exc.fields[0].field
        body = error_body(exc.message, _type_of(exc.status), param=param, code=exc.code)
    response = web.Response(status=exc.status, body=body, headers={"Content-Type": JSON})
    response.headers.update(exc.response_headers())  # Retry-After, WWW-Authenticate
    return response


def http_error(exc: web.HTTPException) -> web.Response:
    """aiohttp's own refusals (413 past MAX_BODY_BYTES) in OpenAI's shape."""
    code = exc.reason.lower().replace(" ", "_")
    body = error_body(exc.reason, _type_of(exc.status), code=code)
    return web.Response(status=exc.status, body=body, headers={"Content-Type": JSON})


def internal_error() -> web.Response:
    body = error_body("internal error", "server_error", code="internal_error")
    return web.Response(status=500, body=body, headers={"Content-Type": JSON})


def _type_of(status: int) -> str:
    if status == 401:
        return "authentication_error"
    if status == 403:
        return "permission_error"
    if status == 429:
        return "rate_limit_error"
    return "invalid_request_error" if status < 500 else "server_error"
