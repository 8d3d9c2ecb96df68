"""The lease holder's side of the stream relay (streams.py): one generation's events, kept and, once a
joiner asks, appended to the generation's Redis Stream in order, each write off the generation's path.

Entries are numbered 0-1, 0-2, ...; an "event" entry holds the events written together, each preceded
by its length; the last entry is the end ("completed", "failed", "cut", or "overflow").
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import struct
from collections.abc import Iterator
from typing import Literal

from service.redis.commands import Miss, RedisCommands

# How an entry ends a stream: the generation completed (it is being stored), failed (the upstream's error)
# or was cut (a broken upstream stream). "overflow" says the publisher stopped relaying past its bounds.
Terminal = Literal["completed", "failed", "cut"]
EVENT = "event"
OVERFLOW = "overflow"
EVENT_BYTES, OVERFLOW_BYTES = EVENT.encode(), OVERFLOW.encode()
_LENGTH = struct.Struct(">I")


class StreamPublisher:
    """One generation's events, kept here and appended to its stream, in order, once a joiner asks;
    the generation never waits for Redis.

    One writer task at a time sends what is queued, in one round trip (a pipeline when there is more
    than one event, or the stream's expiry to set): a fast generation is relayed in batches. Past
    `max_events` or `max_bytes` it ends the stream with "overflow" and keeps nothing more: joiners then
    wait for the stored entry instead. A write that fails stops the relay too: its joiners see a gap,
    or the lease go, and fall back.
    """

    def __init__(
        self,
        commands: RedisCommands,
        stream: str,
        *,
        ttl_s: float,
        linger_s: float,
        max_events: int,
        max_bytes: int,
        writers: set[asyncio.Task[None]],
    ) -> None:
        self._commands = commands
        self.stream = stream
        self._ttl_ms = max(1, round(ttl_s * 1000))
        self._linger_ms = max(1, round(linger_s * 1000))
        self._max_events = max_events
        self._max_bytes = max_bytes
        self._writers = writers
        self._kept: list[tuple[str, bytes]] = []  # every event so far, its terminal one last
        self._bytes = 0
        self._relaying = False
        self._queued = 0  # how many of the kept events have been handed to a writer
        self._pending: list[tuple[str, bytes]] = []
        self._entries = 0  # entries written (or being written) to the stream
        self.failed = False
        self._writer: asyncio.Task[None] | None = None

    @property
    def ended(self) -> bool:
        return bool(self._kept) and self._kept[-1][0] != EVENT

    def publish(self, data: bytes) -> None:
        """Keep one event (an SSE event's data) for the joiners, and relay it if any joined."""
        if self.ended:
            return
        if len(self._kept) + 1 >= self._max_events or self._bytes + len(data) > self._max_bytes:
            self._keep(OVERFLOW, b"")
            return
        self._bytes += len(data)
        self._keep(EVENT, data)

    def finish(self, kind: Terminal, data: bytes = b"") -> None:
        """End the stream (the first end counts): every joiner sees `kind` as its last event."""
        if not self.ended:
            self._keep(kind, data)

    def relay(self) -> None:
        """A joiner asked: write every event so far, and from now on each as it comes."""
        if not self._relaying:
            self._relaying = True
            self._queue()

    async def written(self) -> bool:
        """Wait until everything queued so far is in Redis; False when a write failed."""
        if self._writer is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._writer)
        return not self.failed

    def _keep(self, kind: str, data: bytes) -> None:
        self._kept.append((kind, data))
        if self._relaying:
            self._queue()

    def _queue(self) -> None:
        if self.failed:
            return
        self._pending.extend(self._kept[self._queued :])
        self._queued = len(self._kept)
        # The writer checks for more before it returns, with no await in between: a task still
        # running will send these; a finished one will not, so start another.
        if self._pending and (self._writer is None or self._writer.done()):
            self._writer = asyncio.create_task(self._write())
            # Owned by the relay until done (the loop keeps only weak references), awaited by its close.
            self._writers.add(self._writer)
            self._writer.add_done_callback(self._writers.discard)

    async def _write(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            # One entry for the events written together (every event so far, when a joiner first
            # asks), then the end in an entry of its own.
            entries: list[tuple[int, str, bytes]] = []
            events = [data for kind, data in batch if kind == EVENT]
            if events:
                self._entries += 1
                entries.append((self._entries, EVENT, _framed(events)))
            if batch[-1][0] != EVENT:
                self._entries += 1
                entries.append((self._entries, *batch[-1]))
            # The stream lives as long as a generation may run from its first write, and a little past
            # its end; between those, an entry is one XADD (a pipeline costs half as much again).
            first = entries[0][0] == 1
            expire_ms = self._linger_ms if entries[-1][1] != EVENT else self._ttl_ms if first else None
            reply = await self._commands.call(
                "XADD", self.stream, functools.partial(self._send, entries, expire_ms)
            )
            if isinstance(reply, Miss):
                self.failed = True
                self._pending.clear()
                return

    async def _send(self, entries: list[tuple[int, str, bytes]], expire_ms: int | None) -> object:
        client = self._commands.client
        # An exact MAXLEN as a bound of last resort: the publisher stops before reaching it.
        if len(entries) == 1 and expire_ms is None:
            number, kind, data = entries[0]
            return await client.xadd(
                self.stream, {kind: data}, id=f"0-{number}", maxlen=self._max_events, approximate=False
            )
        pipe = client.pipeline(transaction=False)
        for number, kind, data in entries:
            pipe.xadd(self.stream, {kind: data}, id=f"0-{number}", maxlen=self._max_events, approximate=False)
        if expire_ms is not None:
            pipe.pexpire(self.stream, expire_ms)
        return await pipe.execute()


def _framed(events: list[bytes]) -> bytes:
    """Several events as one entry's data: each preceded by its length (4 bytes, big-endian)."""
    return b"".join(_LENGTH.pack(len(event)) + event for event in events)


def unframed(data: bytes) -> Iterator[bytes]:
    offset = 0
    while offset < len(data):
        (length,) = _LENGTH.unpack_from(data, offset)
        offset += _LENGTH.size
        yield data[offset : offset + length]
        offset += length
