"""The HTTP client of the OpenAI-compatible upstream (`MODEL=openai+http://HOST:PORT/v1`): one
connection pool, no cookie jar (one client's cookies must never reach another's request), no
redirects, and at most UPSTREAM_MAX_RESPONSE_BYTES read from any answer."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aiohttp
import orjson
from aiohttp import web

from service.errors import ModelFailed
from service.models.json_inputs import JsonObject
from service.openai.errors import PASSED_HEADERS, UpstreamAnswered, error_body
from service.openai.sse import ServerSentEvent, SseDecoder
from service.settings.converters import redact_url

log = logging.getLogger(__name__)

SCHEME = "openai+"
_REFUSAL_TEXT_CHARS = 500
_READ_BYTES = 64 * 1024


class UpstreamFailed(ModelFailed):
    """The upstream gave no usable answer: unreachable, a 5xx or a redirect, a body that is not
    what was asked for, or more bytes than allowed. Never stored; details go to the log. Its
    message is predcache's own words: the runner shows it to the client (service.errors.ModelFailed)."""


class UpstreamCut(UpstreamFailed):
    """The upstream's stream stopped before its end: the connection broke mid-answer."""


@dataclass(frozen=True, slots=True)
class Passed:
    """An upstream answer passed on as it came (GET /v1/models)."""

    status: int
    body: bytes
    content_type: str


def base_url(model: str) -> str:
    """The upstream's API root from MODEL: `openai+http://h:p/v1` -> `http://h:p/v1`."""
    return model.removeprefix(SCHEME).rstrip("/")


class OpenAIUpstream:
    def __init__(self, url: str, *, timeout_s: float, max_connections: int, max_response_bytes: int) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.max_connections = max_connections
        self.max_response_bytes = max_response_bytes
        self._session: aiohttp.ClientSession | None = None

    async def client_context(self, app: web.Application) -> AsyncIterator[None]:
        """The app's one pool of connections to the upstream: opened at startup, closed at shutdown."""
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self.max_connections),
            # Also the runner's bound on a generation; this one covers GET /v1/models.
            timeout=aiohttp.ClientTimeout(total=self.timeout_s),
            cookie_jar=aiohttp.DummyCookieJar(),
            headers={"User-Agent": "predcache"},
        )
        log.info("OpenAI-compatible upstream at %s", redact_url(self.url))
        try:
            yield
        finally:
            await self._session.close()
            self._session = None

    async def post_json(self, path: str, body: bytes, authorization: str | None) -> JsonObject:
        """The upstream's JSON object answering `body` at `path` (e.g. "/chat/completions")."""
        async with self._post(path, body, authorization, accept="application/json") as response:
            payload = await self._read(response)
            content_type = response.content_type
        try:
            answer = orjson.loads(payload)
        except orjson.JSONDecodeError:
            answer = None
        if not isinstance(answer, dict) or content_type not in (
            "application/json",
            "application/octet-stream",
        ):
            raise UpstreamFailed(f"the upstream answered {content_type}, not a JSON object")
        return answer

    @asynccontextmanager
    async def stream(
        self, path: str, body: bytes, authorization: str | None
    ) -> AsyncIterator[AsyncIterator[ServerSentEvent]]:
        """The upstream's events answering `body`, each as soon as its blank line arrives."""
        async with self._post(path, body, authorization, accept="text/event-stream") as response:
            if response.content_type != "text/event-stream":
                raise UpstreamFailed(f"the upstream answered a stream request with {response.content_type}")
            yield self._events(response)

    async def get(self, path: str, authorization: str | None) -> Passed:
        """GET `path` upstream, its answer whatever its status (GET /v1/models)."""
        session = self._open()
        headers = {} if authorization is None else {"Authorization": authorization}
        try:
            async with session.get(self.url + path, headers=headers, allow_redirects=False) as response:
                return Passed(response.status, await self._read(response), response.content_type)
        except aiohttp.ClientError as exc:
            raise self._unreachable(exc) from None

    @asynccontextmanager
    async def _post(
        self, path: str, body: bytes, authorization: str | None, *, accept: str
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        session = self._open()
        headers = {"Content-Type": "application/json", "Accept": accept}
        if authorization is not None:
            headers["Authorization"] = authorization
        try:
            async with session.post(
                self.url + path, data=body, headers=headers, allow_redirects=False
            ) as response:
                if not 200 <= response.status < 300:
                    await self._refuse(response)
                yield response
        except TimeoutError:  # aiohttp's own timeouts are ClientErrors too: they are 504, not 503
            raise
        except aiohttp.ClientPayloadError as exc:
            raise UpstreamCut(f"the upstream's answer broke off ({type(exc).__name__})") from None
        except aiohttp.ClientError as exc:
            raise self._unreachable(exc) from None

    async def _events(self, response: aiohttp.ClientResponse) -> AsyncIterator[ServerSentEvent]:
        decoder = SseDecoder()
        size = 0
        async for chunk in response.content.iter_any():
            size += len(chunk)
            if size > self.max_response_bytes:
                raise UpstreamFailed(f"the upstream's stream passed {self.max_response_bytes} bytes")
            for event in decoder.feed(chunk):
                yield event
        for event in decoder.finish():
            yield event

    async def _read(self, response: aiohttp.ClientResponse) -> bytes:
        if (response.content_length or 0) > self.max_response_bytes:
            raise UpstreamFailed(f"the upstream's answer is over {self.max_response_bytes} bytes")
        body = bytearray()
        async for chunk in response.content.iter_chunked(_READ_BYTES):
            body += chunk
            if len(body) > self.max_response_bytes:
                raise UpstreamFailed(f"the upstream's answer passed {self.max_response_bytes} bytes")
        return bytes(body)

    async def _refuse(self, response: aiohttp.ClientResponse) -> None:
        """Raise for a non-2xx answer: a 4xx passed on as it came (never stored), else UpstreamFailed."""
        status = response.status
        payload = await self._read(response)
        if not 400 <= status < 500:
            log.warning("upstream %s answered %d: %r", redact_url(self.url), status, payload[:200])
            raise UpstreamFailed(f"the upstream answered {status}")
        headers = _passed_headers(response.headers)
        if response.content_type == "application/json" or response.content_type.endswith("+json"):
            raise UpstreamAnswered(status, payload, response.content_type, headers)
        # Not JSON (a proxy's HTML page): its text as the message of OpenAI's error shape.
        text = payload[:_REFUSAL_TEXT_CHARS].decode(errors="replace").strip()
        message = f"the upstream answered {status}" + (f": {text}" if text else "")
        body = error_body(message, "upstream_error", code=str(status))
        raise UpstreamAnswered(status, body, "application/json", headers)

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise UpstreamFailed("the upstream client is not open (the app is not running)")
        return self._session

    def _unreachable(self, exc: aiohttp.ClientError) -> UpstreamFailed:
        log.warning("upstream %s: %s: %s", redact_url(self.url), type(exc).__name__, exc)
        return UpstreamFailed(f"the upstream could not be reached ({type(exc).__name__})")


def _passed_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {name: headers[name] for name in PASSED_HEADERS if name in headers}
