"""Writing event streams to a client: a generation relayed live from its log, event by event as
each arrives, or a stored completion replayed. A client that hangs up ends only its own stream."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping

from aiohttp import web

from service.openai.live import EventLog

log = logging.getLogger(__name__)

EVENT_STREAM = "text/event-stream"


def event_stream(headers: Mapping[str, str]) -> web.StreamResponse:
    # X-Accel-Buffering: an nginx in front (deploy/nginx.conf) would otherwise hold events back.
    response = web.StreamResponse(
        headers={
            "Content-Type": EVENT_STREAM,
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
            **headers,
        }
    )
    # Each write goes out at once: no compression buffer, and chunked framing for an open length.
    response.enable_chunked_encoding()
    return response


async def relay(
    request: web.Request, events: EventLog, headers: Mapping[str, str], *, include_usage: bool
) -> web.StreamResponse:
    """Every event of `events` from the first, each written as soon as it is logged, then the end
    as the upstream's: a stream that stopped before its end is cut here too, so the client sees an
    abnormal end rather than an answer that looks whole."""
    response = event_stream(headers)
    await response.prepare(request)
    try:
        async for event in events.follow():
            if event.usage_only and not include_usage:
                continue
            await response.write(event.encoded)
    except ConnectionError:
        return response  # the client hung up: the generation goes on for the others
    ending = events.ending
    if ending is not None and ending.cut:
        log.info("stream cut for the client too: %s", ending.reason)
        cut(request)
    return response


async def replay(request: web.Request, events: bytes, headers: Mapping[str, str]) -> web.StreamResponse:
    """A stored completion's whole event stream (replay.py), in one write."""
    response = event_stream(headers)
    await response.prepare(request)
    with contextlib.suppress(ConnectionError):  # the client hung up
        await response.write(events)
    return response


def cut(request: web.Request) -> None:
    """End the connection without the chunked body's last chunk: what was written is sent, and the
    client reads a broken stream (openai's SDK raises APIConnectionError)."""
    if request.transport is not None:
        request.transport.close()
