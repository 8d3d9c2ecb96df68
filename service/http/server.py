"""What aiohttp's HTTP server says and logs on the service's behalf, outside any handler.

The `Server` header of every response, and the log line for a request too malformed to reach one.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from types import TracebackType

from aiohttp import web_response
from aiohttp.http_exceptions import HttpProcessingError

SERVER_NAME = "predcache"
MALFORMED_LOG_INTERVAL_S = 10.0


def hide_server_version() -> None:
    """Make every response of this process say `Server: predcache`, aiohttp's own 400s included.

    aiohttp fills the header in `StreamResponse._prepare_headers` with
    `headers.setdefault(SERVER, SERVER_SOFTWARE)`, reading `web_response`'s module global on every
    response. Rebinding that global adds no work per request, where a middleware or an
    `on_response_prepare` signal would add some to every hit, and it also reaches the 400s aiohttp's
    protocol layer sends for requests it could not parse, which no middleware or signal sees. It is
    not an API: tests/test_http_details.py fails if an aiohttp upgrade stops reading it. Idempotent.
    """
    web_response.SERVER_SOFTWARE = SERVER_NAME  # type: ignore[attr-defined]


_ExcInfo = (
    bool
    | BaseException
    | tuple[type[BaseException], BaseException, TracebackType | None]
    | tuple[None, None, None]
    | None
)


class MalformedRequestLog(logging.LoggerAdapter[logging.Logger]):
    """aiohttp's server logger, saying one WARNING line per `interval_s` for malformed requests.

    aiohttp answers a request it cannot parse (a NUL or a bare CR in a header, a bad request line)
    with 400 and logs it through `RequestHandler.log_exception`: an ERROR with a full traceback, once
    per request, so any client could flood the logs. Given to aiohttp as the handler's `logger`
    (its documented `handler_args`), this stands in for `aiohttp.server` without touching that global
    logger or subclassing aiohttp's protocol: such records become one line without a traceback, at
    most one per `interval_s`, which counts the ones left out since the previous line. Everything
    else, a genuine 500 included, passes through unchanged.
    """

    def __init__(
        self,
        logger: logging.Logger,
        *,
        interval_s: float = MALFORMED_LOG_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(logger)
        self.interval_s = interval_s
        self._clock = clock
        self._next_line_at = -math.inf
        self.suppressed = 0

    def log(
        self,
        level: int,
        msg: object,
        *args: object,
        exc_info: _ExcInfo = None,
        stack_info: bool = False,
        stacklevel: int = 1,
        extra: Mapping[str, object] | None = None,
        **kwargs: object,
    ) -> None:
        # aiohttp passes the parser's exception itself as exc_info; only those are the client's fault.
        # Below ERROR (aiohttp's DEBUG for a first request that is not HTTP at all) nothing changes.
        if level < logging.ERROR or not isinstance(exc_info, HttpProcessingError):
            super().log(
                level,
                msg,
                *args,
                exc_info=exc_info,
                stack_info=stack_info,
                stacklevel=stacklevel,
                extra=extra,
                **kwargs,
            )
            return
        now = self._clock()
        if now < self._next_line_at:
            self.suppressed += 1
            return
        self._next_line_at = now + self.interval_s
        suppressed, self.suppressed = self.suppressed, 0
        # The first line of aiohttp's message names the fault; the lines after it echo the client's bytes.
        lines = exc_info.message.splitlines() or [""]
        fault = lines[0].rstrip(":")[:200]
        self.logger.warning(
            "%s: %s: %s; answered %d%s",
            str(msg) % args if args else msg,
            type(exc_info).__name__,
            fault,
            exc_info.code,
            f" ({suppressed} more since the previous such line, not logged)" if suppressed else "",
        )
