"""Every error predcache raises on purpose, and what a client sees for it.

PredcacheError            base; `status` is the HTTP status, `code` the JSON error code
├── InvalidInput          400: the request is not a valid input of the model (`fields` says where)
│   └── InvalidPair       400: the same, for a pair-only model (the demo): `invalid_pair`
├── InvalidCacheControl   400: a Cache-Control max-age that is not a whole number of seconds
├── Unauthorized          401: an admin endpoint without the admin bearer token
├── UnsupportedMediaType  415: a POST body that is not declared as JSON
├── AdminApiOff           404: an admin endpoint while ADMIN_TOKEN is unset
├── ClientClosedRequest   499: the client hung up before its whole body arrived; nobody to answer
├── UnknownInput          404: a valid input the model refuses to predict (raised by the model)
│   └── UnknownPair       404: the same, for a pair-only model: `unknown_pair`
├── UpstreamRefused       4xx: an upstream model server refused the input; its status and body, as sent
├── UpstreamAnswerTooLarge 502: the upstream's answer is over UPSTREAM_MAX_RESPONSE_BYTES
├── CacheUnavailable      503: an invalidation could not reach the cache
├── Overloaded            503: the model's queue is full; `retry_after_s` says when to come back
├── ModelBusy             503: the model (an upstream's 429) asked for no calls for `retry_after_s`
├── ModelError            503: the model raised, or returned something its output type refuses
└── ModelTimeout          504: the model did not answer within the model timeout
ModelFailed               raised by a model seam of predcache's own (upstream mode): its message is
                          predcache's words, fit for the client; anything else a model raises is not
ConfigError               a setting has a bad value (the command exits with status 2)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class PredcacheError(Exception):
    """An error with a meaning for the client: an HTTP status, a stable code, maybe headers."""

    status = 500
    code = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def response_headers(self) -> dict[str, str]:
        """HTTP headers the error's response carries (Retry-After, WWW-Authenticate)."""
        return {}


@dataclass(frozen=True, slots=True)
class FieldError:
    """One input field at fault and what is wrong with it."""

    field: str  # dotted path, e.g. "horizon_minutes" or "features.3"
    message: str


@dataclass(frozen=True, slots=True)
class InvalidItem:
    """One invalid input of a batch: where it is, and what is wrong with it."""

    index: int
    message: str
    fields: tuple[FieldError, ...]


class InvalidInput(PredcacheError):
    """The request is not a valid input of the model; nothing was looked up or computed."""

    status = 400
    code = "invalid_input"

    def __init__(
        self, message: str, fields: Sequence[FieldError] = (), items: Sequence[InvalidItem] = ()
    ) -> None:
        super().__init__(message)
        self.fields = tuple(fields)
        self.items = tuple(items)  # for a batch: each invalid input, by index


class InvalidPair(InvalidInput):
    """The `pair` parameter is missing, repeated, too long or not of the form BASE-QUOTE."""

    code = "invalid_pair"


class UnsupportedMediaType(PredcacheError):
    """A POST body whose Content-Type is not JSON."""

    status = 415
    code = "unsupported_media_type"


class ClientClosedRequest(PredcacheError):
    """The client closed its connection before its request body had arrived. Nothing can be sent
    back; its status, nginx's 499, counts it apart from the service's own failures."""

    status = 499
    code = "client_closed_request"


class InvalidCacheControl(PredcacheError):
    """The Cache-Control request header has a max-age that is not a whole number of seconds."""

    status = 400
    code = "invalid_cache_control"


class Unauthorized(PredcacheError):
    """An admin endpoint was called without `Authorization: Bearer <ADMIN_TOKEN>`."""

    status = 401
    code = "unauthorized"

    def response_headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="predcache"'}  # RFC 9110 11.6.1: a 401 says how


class AdminApiOff(PredcacheError):
    """An admin endpoint was called while no ADMIN_TOKEN is set: the admin API is off.

    A 404, as for a path that does not exist, but saying how to turn the API on (and nothing else:
    not whether the input is valid, nor what is cached)."""

    status = 404
    code = "admin_api_off"

    def __init__(self) -> None:
        super().__init__(
            "the admin API is off; start predcache with ADMIN_TOKEN=<secret> (or --admin-token) "
            "and call it with Authorization: Bearer <secret>"
        )


class CacheUnavailable(PredcacheError):
    """The cache could not be reached to carry out an invalidation; nothing was changed."""

    status = 503
    code = "cache_unavailable"


class UnknownInput(PredcacheError):
    """A valid input the model cannot predict (an unknown pair, customer, item).

    A model raises it from `predict` before doing any work; it answers 404 and is never cached.
    """

    status = 404
    code = "unknown_input"


class UnknownPair(UnknownInput):
    """The pair is well formed but the model does not predict it."""

    code = "unknown_pair"

    def __init__(self, pair: str) -> None:
        super().__init__(f"the model does not predict {pair}")
        self.pair = pair


class Overloaded(PredcacheError):
    """Too many predictions are already waiting for the model; the miss was refused at once."""

    status = 503
    code = "overloaded"

    def __init__(self, waiting: int, retry_after_s: int = 1) -> None:
        super().__init__(f"the model has {waiting} predictions waiting; retry in {retry_after_s} s")
        self.waiting = waiting
        self.retry_after_s = retry_after_s

    def response_headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


class ModelBusy(PredcacheError):
    """The model asked not to be called for a while (an upstream's 429 or 503 with Retry-After):
    until then every miss is refused at once, without a call."""

    status = 503
    code = "model_busy"

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"the model asked for no calls for a while; retry in {retry_after_s} s")
        self.retry_after_s = retry_after_s

    def response_headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


class UpstreamRefused(PredcacheError):
    """An upstream model server answered 4xx: the input is bad in its eyes. Never cached; every waiter
    of the call gets the upstream's own status and JSON body."""

    code = "upstream_refused"

    def __init__(self, status: int, body: bytes, content_type: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.body = body  # JSON, served as is
        self.content_type = content_type


class UpstreamAnswerTooLarge(PredcacheError):
    """The upstream's answer is longer than UPSTREAM_MAX_RESPONSE_BYTES: it was not read past that,
    and its connection was dropped."""

    status = 502
    code = "upstream_answer_too_large"

    def __init__(self, max_bytes: int) -> None:
        super().__init__(
            f"the upstream's answer is larger than UPSTREAM_MAX_RESPONSE_BYTES ({max_bytes} bytes)"
        )
        self.max_bytes = max_bytes


class ModelError(PredcacheError):
    """The model failed for this input; nothing was cached and the next request tries again.

    `reason` is predcache's own words, never the model's exception text (which may hold other
    requests' inputs); that goes to the log, on a line that carries `request_id` too.
    """

    status = 503
    code = "model_error"

    def __init__(self, pair: str, reason: str, request_id: str | None = None) -> None:
        where = "" if request_id is None else f"; the service log says more under request id {request_id}"
        super().__init__(f"the model failed to predict {pair}: {reason}{where}")
        self.pair = pair
        self.reason = reason
        self.request_id = request_id


class ModelTimeout(PredcacheError):
    """The model did not answer within the model timeout."""

    status = 504
    code = "model_timeout"

    def __init__(self, pair: str, timeout_s: float) -> None:
        super().__init__(f"the model did not predict {pair} within {timeout_s:g} s")
        self.pair = pair
        self.timeout_s = timeout_s


class ModelFailed(Exception):
    """A model seam predcache wrote itself (the upstream client) found no prediction; its message says
    why in predcache's own words, and `detail` (for the log only) what it saw."""

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail


class ConfigError(Exception):
    """A setting has a value the service cannot use; the message names the setting."""

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(f"{setting}: {message}")
        self.setting = setting
