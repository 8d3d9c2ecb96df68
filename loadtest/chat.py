"""LLM mode's sender: each request POSTs a chat completion body with aiohttp and reads the answer as it
arrives, server-sent events or JSON, timing each token (llm.Answer) from when the request was sent.
"""

from __future__ import annotations

import contextlib
import errno
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import aiohttp
from yarl import URL

from . import http1
from .http1 import Response
from .llm import Answer, SSEDecoder
from .settings import RunSettings
from .workload import LinePicker


@contextlib.contextmanager
def transport_errors() -> Iterator[None]:
    """aiohttp's failures as the raw client names them, so both count errors alike in the report."""
    try:
        yield
    except aiohttp.ClientConnectorError as exc:
        raise http1.ConnectError(str(exc)) from exc
    except aiohttp.ServerDisconnectedError as exc:
        raise http1.ServerDisconnectedError(str(exc)) from exc
    except aiohttp.ClientPayloadError as exc:
        raise http1.PayloadError(str(exc)) from exc
    except aiohttp.ClientOSError as exc:
        if exc.errno != errno.ECONNRESET:
            raise
        # A reset before the response counts as a disconnect, as it does for the raw client.
        raise http1.ServerDisconnectedError(str(exc)) from exc


@contextlib.asynccontextmanager
async def chat_senders(
    settings: RunSettings, pick: LinePicker
) -> AsyncIterator[Callable[[], Callable[[int], Awaitable[Response]]]]:
    """Every worker sends through one aiohttp session with a pool of `concurrency` connections."""
    connector = aiohttp.TCPConnector(limit=settings.concurrency, limit_per_host=0)
    url = URL(settings.url)
    bodies = settings.inputs
    headers = {"Content-Type": "application/json"}
    if settings.api_key is not None:
        headers["Authorization"] = f"Bearer {settings.api_key}"
    async with aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=settings.timeout_s),
        cookie_jar=aiohttp.DummyCookieJar(),
    ) as session:

        async def send(i: int) -> Response:
            answer = Answer()
            clock = time.perf_counter
            started = clock()
            nbytes = 0
            with transport_errors():
                async with session.post(url, data=bodies[pick(i)], headers=headers) as response:
                    if response.status >= 400:
                        nbytes = len(await response.read())
                    elif response.content_type == "text/event-stream":
                        decoder = SSEDecoder()
                        async for chunk in response.content.iter_any():
                            at_s = clock() - started
                            nbytes += len(chunk)
                            for event in decoder.feed(chunk):
                                answer.on_event(event, at_s)
                    else:
                        body = await response.read()
                        nbytes = len(body)
                        answer.on_json(body, clock() - started)
            cache = response.headers
            return Response(
                response.status, nbytes, cache.get("X-Cache"), cache.get("Cache-Status"), None, answer
            )

        yield lambda: send
