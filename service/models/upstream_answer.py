"""What an upstream model server answered: its body read up to a cap (never past it), and what its
status, body and Retry-After mean for predcache."""

from __future__ import annotations

import email.utils
import re
from dataclasses import dataclass
from datetime import datetime

import aiohttp
import orjson
from multidict import CIMultiDictProxy
from pydantic import JsonValue

from service.errors import UpstreamRefused

# 4xx answers that speak of predcache's own request rather than of the client's input: credentials
# and permissions between predcache and the upstream (401, 403, 407), a wrong method for the URL
# (405), the upstream's own capacity (408, 429). Passed through, they would tell the client to fix
# what only the operator can; they are the model failing (503), like a 5xx.
NOT_ABOUT_THE_INPUT = frozenset({401, 403, 405, 407, 408, 429})
# Answers whose Retry-After asks predcache to stay away for a while (RFC 9110, 10.2.3).
RETRY_LATER = frozenset({429, 503})
# The longest pause an upstream can ask for: a Retry-After of a day (a misconfigured upstream) would
# otherwise silence the model that long; past this, one call asks again.
MAX_RETRY_AFTER_S = 300
# An error body is an explanation, not a prediction: past this much it is not read, nor passed on.
ERROR_BODY_MAX_BYTES = 64 * 1024
_REFUSAL_TEXT_CHARS = 500
_DELAY_SECONDS = re.compile(r"[0-9]{1,10}")


@dataclass(frozen=True, slots=True)
class UpstreamAnswer:
    status: int
    body: bytes  # the whole body, or when `complete` is False the first chunk of it
    complete: bool
    content_type: str
    headers: CIMultiDictProxy[str]

    @property
    def is_success(self) -> bool:
        return 200 <= self.status < 300


async def read_answer(response: aiohttp.ClientResponse, *, max_bytes: int) -> UpstreamAnswer:
    """The answer, its body read chunk by chunk up to `max_bytes` (ERROR_BODY_MAX_BYTES for an error).
    Past that, or when its Content-Length says it will be, reading stops and the connection is
    closed rather than returned to the pool, so the rest of the body is never read: a huge answer
    costs a chunk of memory, not its size."""
    cap = max_bytes if 200 <= response.status < 300 else min(max_bytes, ERROR_BODY_MAX_BYTES)
    chunks: list[bytes] = []
    read = 0
    complete = response.content_length is None or response.content_length <= cap
    if complete:
        # aiohttp stops reading the socket while its buffer is full: at most a chunk waits there.
        async for chunk in response.content.iter_any():
            chunks.append(chunk)
            read += len(chunk)
            if read > cap:
                complete = False
                break
    if not complete:
        response.close()
        chunks = chunks[:1]  # enough for the log to show how it began
    body = b"".join(chunks)
    return UpstreamAnswer(response.status, body, complete, response.content_type, response.headers)


def refusal(answer: UpstreamAnswer) -> UpstreamRefused:
    """The upstream's 4xx as an error for every waiter: its JSON body as is, other bodies (text, HTML)
    as the message of predcache's own error shape, so that the API answers JSON only; a body too
    long to read whole is not passed on."""
    status = answer.status
    message = f"the upstream refused the input ({status})"
    if not answer.complete:
        message += f"; its answer, over {ERROR_BODY_MAX_BYTES} bytes, is not passed on"
        return UpstreamRefused(status, _error_body(message), "application/json", message)
    try:
        json_value(answer.body, answer.content_type)
    except ValueError:
        pass
    else:
        return UpstreamRefused(status, answer.body, answer.content_type, message)
    text = answer.body[:_REFUSAL_TEXT_CHARS].decode(errors="replace").strip()
    message += f": {text}" if text else ""
    return UpstreamRefused(status, _error_body(message), "application/json", message)


def retry_after_s(value: str | None, now: datetime) -> float | None:
    """The delay a Retry-After header asks for, in seconds from `now` (at most MAX_RETRY_AFTER_S);
    None when it is absent or neither a number of seconds nor an HTTP date."""
    if value is None:
        return None
    value = value.strip()
    if _DELAY_SECONDS.fullmatch(value):
        return float(min(int(value), MAX_RETRY_AFTER_S))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None  # RFC 9110's dates are GMT; a date without a zone is not one of them
    return min(max(0.0, (when - now).total_seconds()), MAX_RETRY_AFTER_S)


def json_value(payload: bytes, content_type: str) -> JsonValue:
    """The parsed body; ValueError unless it is JSON by its Content-Type (aiohttp says
    application/octet-stream when there is none) and by its bytes."""
    if content_type not in ("application/json", "application/octet-stream") and not content_type.endswith(
        "+json"
    ):
        raise ValueError(f"Content-Type {content_type}")
    value: JsonValue = orjson.loads(payload)  # JSONDecodeError is a ValueError
    return value


def _error_body(message: str) -> bytes:
    return orjson.dumps({"error": {"code": UpstreamRefused.code, "message": message}})
