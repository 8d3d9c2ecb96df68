"""A minimal keep-alive HTTP/1.1 client on `asyncio.Protocol`, the default sender for `http://` URLs.

It exists for speed: aiohttp's client costs ~80 µs of Python per request, which made the tester, not
the server, the bottleneck. One `Connection` per worker, one request in flight on it; GET, or POST with
a JSON body. Bodies are counted and dropped as they arrive unless the connection is asked to keep them.
"""

from __future__ import annotations

import asyncio
import time
from typing import NamedTuple, cast

from yarl import URL

from .llm import Answer

# Parser states: reading the status line and headers, or one of the ways an HTTP/1.1 body is framed.
_HEAD, _BODY_LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_TRAILER, _BODY_UNTIL_CLOSE = range(6)
# A response head this large is not the trivial answer a load test expects; refuse rather than buffer.
MAX_HEAD_BYTES = 64 * 1024


class Response(NamedTuple):
    """What the runner records of an answer: status, body size, the cache headers, the body itself
    when the sender keeps it (batches, whose per-item classes are in the body), and in LLM mode what
    the answer said about its tokens."""

    status: int
    nbytes: int
    x_cache: str | None
    cache_status: str | None
    body: bytes | None = None
    answer: Answer | None = None


class ClientError(Exception):
    """A request that failed below HTTP; `kind` is the name it is counted under in the report."""

    kind = "client"


class ConnectError(ClientError):
    """The connection could not be opened (refused, unreachable, name not resolved)."""

    kind = "connect"


class ServerDisconnectedError(ClientError):
    """The server closed or reset the connection before the response's head was complete."""

    kind = "disconnected"


class PayloadError(ClientError):
    """The response was malformed, or the connection ended in the middle of its body."""

    kind = "payload"


def build_request(url: URL, body: bytes | None = None) -> bytes:
    """The bytes of a GET for `url`, or of a POST of the JSON `body` to it; built once per distinct
    request where the workload allows (every GET URL, every input line) and sent as they are."""
    head = (
        f"{'GET' if body is None else 'POST'} {url.raw_path_qs} HTTP/1.1\r\n"
        f"Host: {url.host_port_subcomponent}\r\n"
        "User-Agent: predcache-loadtest\r\n"
        "Accept: */*\r\n"
    )
    if body is None:
        return (head + "\r\n").encode("ascii")
    return (
        f"{head}Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode("ascii") + body
    )


class _ResponseProtocol(asyncio.Protocol):
    """Parses one response at a time from the byte stream and resolves the waiter with it."""

    def __init__(self, keep_body: bool = False) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._waiter: asyncio.Future[Response] | None = None
        self._buffer = bytearray()
        self._state = _HEAD
        self._status = 0
        self._x_cache: str | None = None
        self._cache_status: str | None = None
        self._keep_alive = True
        self._remaining = 0  # body or chunk bytes (chunk data + its CRLF) still to come
        self._nbytes = 0
        # The body as it arrives (decoded from chunks), only when asked: most runs need just its size.
        self._keep_body = keep_body
        self._body = bytearray()

    def expect(self, waiter: asyncio.Future[Response]) -> None:
        self._waiter = waiter
        self._state = _HEAD
        self._nbytes = 0
        self._buffer.clear()
        if self._keep_body:
            self._body.clear()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses of asyncio.Transport, so no isinstance check.
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._state == _BODY_UNTIL_CLOSE and exc is None:
            self._finish()
        elif self._state == _HEAD:
            self._fail(ServerDisconnectedError("server disconnected before the response head"))
        else:
            self._fail(PayloadError("connection ended in the middle of the response body"))

    def data_received(self, data: bytes) -> None:
        if self._waiter is None:
            return  # nothing asked for; a late answer to a timed-out request is dropped with its connection
        self._buffer += data
        try:
            self._parse()
        except (ValueError, IndexError) as exc:
            self._fail(PayloadError(f"malformed response: {exc}"))

    def _parse(self) -> None:
        buffer = self._buffer
        if self._state == _HEAD:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > MAX_HEAD_BYTES:
                    raise ValueError("response head too large")
                return
            self._parse_head(bytes(buffer[:end]))
            del buffer[: end + 4]
        if self._state == _BODY_LENGTH:
            # Counted and dropped as it arrives, so a large body is never held whole (unless kept).
            taken = min(self._remaining, len(buffer))
            if self._keep_body:
                self._body += buffer[:taken]
            del buffer[:taken]
            self._nbytes += taken
            self._remaining -= taken
            if not self._remaining:
                self._finish()
        elif self._state == _BODY_UNTIL_CLOSE:
            self._nbytes += len(buffer)
            if self._keep_body:
                self._body += buffer
            buffer.clear()
        else:
            self._parse_chunks()

    def _parse_head(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        version, status = lines[0].split(b" ", 2)[:2]
        if not version.startswith(b"HTTP/1."):
            raise ValueError(f"not an HTTP/1.x status line: {lines[0]!r}")
        self._status = int(status)
        self._keep_alive = version != b"HTTP/1.0"
        self._x_cache = self._cache_status = None
        length: int | None = None
        chunked = False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                tokens = value.lower()
                if b"close" in tokens:
                    self._keep_alive = False
                elif b"keep-alive" in tokens:
                    self._keep_alive = True
            elif name == b"x-cache":
                self._x_cache = value.strip().decode("latin-1")
            elif name == b"cache-status":
                self._cache_status = value.strip().decode("latin-1")
        if chunked:
            self._state = _CHUNK_SIZE
        elif length is not None:
            self._state, self._remaining = _BODY_LENGTH, length
        elif self._status in (204, 304):
            self._state, self._remaining = _BODY_LENGTH, 0
        else:
            self._state, self._keep_alive = _BODY_UNTIL_CLOSE, False

    def _parse_chunks(self) -> None:
        buffer = self._buffer
        while True:
            if self._state == _CHUNK_DATA:
                # The chunk's data, then its CRLF: `_remaining` counts both, only the data is body.
                taken = min(self._remaining, len(buffer))
                if self._keep_body and self._remaining > 2:
                    self._body += buffer[: min(taken, self._remaining - 2)]
                del buffer[:taken]
                self._remaining -= taken
                if self._remaining:
                    return
                self._state = _CHUNK_SIZE
            end = buffer.find(b"\r\n")
            if end < 0:
                return
            if self._state == _CHUNK_TRAILER:
                del buffer[: end + 2]
                if end == 0:  # the empty line that ends the trailer section
                    self._finish()
                    return
                continue
            size = int(bytes(buffer[:end]).split(b";", 1)[0], 16)
            del buffer[: end + 2]
            self._nbytes += size
            if size == 0:
                self._state = _CHUNK_TRAILER
            else:
                self._state, self._remaining = _CHUNK_DATA, size + 2

    def _finish(self) -> None:
        waiter, self._waiter = self._waiter, None
        self._state = _HEAD
        if not self._keep_alive and self.transport is not None:
            # Marked closed now, not when connection_lost runs later: the next request, sent as soon
            # as this waiter resolves, must open a new connection instead of writing to this one.
            self.closed = True
            self.transport.close()
        if waiter is not None and not waiter.done():
            body = bytes(self._body) if self._keep_body else None
            waiter.set_result(Response(self._status, self._nbytes, self._x_cache, self._cache_status, body))

    def _fail(self, exc: ClientError) -> None:
        waiter, self._waiter = self._waiter, None
        self._state = _HEAD
        self.closed = True
        if self.transport is not None:
            self.transport.abort()
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)


class Connection:
    """One keep-alive connection to `host:port`, opened on first use and reopened after it closes.

    With `keep_body` every response carries its body; otherwise only its size.
    """

    def __init__(self, host: str, port: int, timeout_s: float, *, keep_body: bool = False) -> None:
        self._keep_body = keep_body
        self._host = host
        self._port = port
        self._timeout_s = timeout_s
        self._loop = asyncio.get_running_loop()
        self._protocol: _ResponseProtocol | None = None
        self._timer: asyncio.TimerHandle | None = None

    async def request(self, request: bytes) -> Response:
        """Send pre-built request bytes and wait for the whole response, at most `timeout_s`.

        Raises TimeoutError, or a `ClientError` whose `kind` names the failure.
        """
        deadline = time.perf_counter() + self._timeout_s
        protocol = self._protocol
        if protocol is None or protocol.closed:
            protocol = await self._connect()
        waiter: asyncio.Future[Response] = self._loop.create_future()
        protocol.expect(waiter)
        assert protocol.transport is not None
        protocol.transport.write(request)
        self._time_out(waiter, deadline)
        try:
            return await waiter
        except BaseException:
            # After a timeout or cancellation the answer may still arrive; it must not be read as the
            # answer to the next request, so the connection goes with it.
            self.close()
            raise
        finally:
            if self._timer is not None:
                self._timer.cancel()

    async def _connect(self) -> _ResponseProtocol:
        try:
            async with asyncio.timeout(self._timeout_s):
                _, protocol = await self._loop.create_connection(
                    lambda: _ResponseProtocol(self._keep_body), self._host, self._port
                )
        except OSError as exc:
            raise ConnectError(f"cannot connect to {self._host}:{self._port}: {exc}") from exc
        self._protocol = protocol
        return protocol

    def _time_out(self, waiter: asyncio.Future[Response], deadline: float) -> None:
        """Fail `waiter` once `deadline` has passed, or set a timer for the time left.

        Timers are armed until the clock agrees: uvloop reads its clock once per loop iteration, in
        whole milliseconds, so its timers can fire early, and a request must never be counted as timed
        out before `timeout_s` (measured, as latency is, with perf_counter) has passed.
        """
        remaining_s = deadline - time.perf_counter()
        if remaining_s > 0:
            self._timer = self._loop.call_later(remaining_s, self._time_out, waiter, deadline)
        elif not waiter.done():
            waiter.set_exception(TimeoutError(f"no complete response within {self._timeout_s:g} s"))

    def close(self) -> None:
        if self._protocol is not None and self._protocol.transport is not None:
            self._protocol.transport.abort()
        self._protocol = None
