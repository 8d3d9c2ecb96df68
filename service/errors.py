"""Every error predcache raises on purpose, and what a client sees for it.

PredcacheError            base; `status` is the HTTP status, `code` the JSON error code
├── InvalidPair           400: the `pair` parameter is missing, repeated, too long or malformed
├── UnknownPair           404: a well-formed pair the model does not predict
├── ModelError            503: the model raised, or returned something that is not a finite number
└── ModelTimeout          504: the model did not answer within the model timeout
ConfigError               a setting has a bad value (the command exits with status 2)
"""

from __future__ import annotations


class PredcacheError(Exception):
    """An error with a meaning for the client: an HTTP status and a stable code."""

    status = 500
    code = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidPair(PredcacheError):
    """The `pair` parameter is missing, repeated, too long or not of the form BASE-QUOTE."""

    status = 400
    code = "invalid_pair"


class InvalidCacheControl(PredcacheError):
    """The Cache-Control request header has a max-age that is not a whole number of seconds."""

    status = 400
    code = "invalid_cache_control"


class Unauthorized(PredcacheError):
    """An admin endpoint was called without `Authorization: Bearer <ADMIN_TOKEN>`."""

    status = 401
    code = "unauthorized"


class CacheUnavailable(PredcacheError):
    """The cache could not be reached to carry out an invalidation; nothing was changed."""

    status = 503
    code = "cache_unavailable"


class UnknownPair(PredcacheError):
    """The pair is well formed but the model does not predict it."""

    status = 404
    code = "unknown_pair"

    def __init__(self, pair: str) -> None:
        super().__init__(f"the model does not predict {pair}")
        self.pair = pair


class ModelError(PredcacheError):
    """The model failed for this pair; nothing was cached and the next request tries again."""

    status = 503
    code = "model_error"

    def __init__(self, pair: str, reason: str) -> None:
        super().__init__(f"the model failed to predict {pair}: {reason}")
        self.pair = pair
        self.reason = reason


class ModelTimeout(PredcacheError):
    """The model did not answer within the model timeout."""

    status = 504
    code = "model_timeout"

    def __init__(self, pair: str, timeout_s: float) -> None:
        super().__init__(f"the model did not predict {pair} within {timeout_s:g} s")
        self.pair = pair
        self.timeout_s = timeout_s


class ConfigError(Exception):
    """A setting has a value the service cannot use; the message names the setting."""

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(f"{setting}: {message}")
        self.setting = setting
