"""A generation's events relayed to other replicas through a Redis Stream: the lease holder appends each
event, then one terminal event; a joiner on any replica reads from the first event and blocks for the rest.

Fails open like every Redis command: when the relay cannot go on, a joiner learns it by `RelayLost` and
does what a replica without the relay does (wait for the stored entry, or compute).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncGenerator, Awaitable
from dataclasses import dataclass
from typing import Literal, cast

from service.redis import keyspace
from service.redis.commands import Miss, RedisCommands
from service.redis.lease import Leases
from service.redis.topology import RedisClient, close_client, create_client

# How an entry ends a stream: the generation completed (it is being stored), failed (the upstream's error)
# or was cut (a broken upstream stream). "overflow" says the publisher stopped relaying past its bounds.
Terminal = Literal["completed", "failed", "cut"]
EVENT = "event"
OVERFLOW = "overflow"

# A joiner blocks this long per XREAD; after a silent one it checks that the generation is still running.
BLOCK_S = 1.0
# How long a finished stream stays readable: a joiner that read the holder's token just before the end.
LINGER_S = 5.0
# Entries one XREAD returns at most: a joiner arriving late gets what exists so far in a few reads.
READ_COUNT = 1024

# XREAD's reply without decode_responses: [[stream, [(id, {kind: data})]]].
Entries = list[tuple[bytes, dict[bytes, bytes]]]


@dataclass(frozen=True, slots=True)
class Relayed:
    """One event of a generation as the holder published it: `kind` "event", or its terminal kind."""

    kind: str
    data: bytes

    @property
    def terminal(self) -> bool:
        return self.kind != EVENT


class RelayLost(Exception):
    """The relay cannot take a joiner any further; it had received `received` events before.

    `reason`: "unavailable" (Redis did not answer), "idle" (no generation holds the lease), "busy" (every
    stream reader of this replica is in use), "gap" (events are missing: the holder's writes failed),
    "overflow" (the generation outgrew the relay's bounds), "ended" (the lease went without a terminal
    event: the holder died), "timeout" (the stream outlived the longest a generation may run).
    """

    def __init__(self, reason: str, received: int) -> None:
        super().__init__(f"stream relay lost ({reason}) after {received} events")
        self.reason = reason
        self.received = received


def reader_client(url: str, *, timeout_s: float, readers: int, block_s: float = BLOCK_S) -> RedisClient:
    """The client of a relay's blocking reads: `readers` connections (per node), whose reads may take
    a whole block longer than the command budget `timeout_s`."""
    return create_client(url, timeout_s=timeout_s + block_s, max_connections=readers)


class StreamRelay:
    """Publishers for the generations this replica holds the lease of, joiners for everybody's.

    `reader` is a client of its own for the blocking reads (XREAD BLOCK holds its connection until an
    event arrives), with a pool of `readers` connections: at most that many joins run at once here, and
    one more is refused at once ("busy") rather than waiting for a connection, so blocking reads never
    take the connections, or the command slots, of the cache's own commands.
    """

    def __init__(
        self,
        commands: RedisCommands,
        leases: Leases,
        reader: RedisClient,
        *,
        readers: int,
        ttl_s: float,
        max_events: int,
        max_bytes: int,
        linger_s: float = LINGER_S,
        block_s: float = BLOCK_S,
    ) -> None:
        self._commands = commands
        self._leases = leases
        self._reader = reader
        self._slots = asyncio.Semaphore(readers)
        self._ttl_s = ttl_s
        self._linger_s = linger_s
        self._block_s = block_s
        self._max_events = max_events
        self._max_bytes = max_bytes
        self._writers: set[asyncio.Task[None]] = set()

    def publisher(self, key: str, token: str) -> StreamPublisher:
        """The publisher of the generation running under the lease `token` on `key`."""
        return StreamPublisher(
            self._commands,
            keyspace.stream_key(key, token),
            ttl_s=self._ttl_s,
            linger_s=self._linger_s,
            max_events=self._max_events,
            max_bytes=self._max_bytes,
            writers=self._writers,
        )

    async def join(self, key: str) -> AsyncGenerator[Relayed, None]:
        """Every event of the generation running on `key`, from its first, ending with its terminal
        one; raises RelayLost when the relay cannot go on. Close it (`contextlib.aclosing`) when leaving
        early, to hand its reader back at once."""
        token = await self._leases.holder(key)
        if isinstance(token, Miss):
            raise RelayLost("unavailable", 0)
        if token is None:
            raise RelayLost("idle", 0)
        if self._slots.locked():
            raise RelayLost("busy", 0)
        async with self._slots:
            stream = keyspace.stream_key(key, token)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self._ttl_s
            received = 0
            while True:
                if loop.time() > deadline:
                    raise RelayLost("timeout", received)
                entries = await self._read(stream, received, self._block_s)
                if not entries:
                    # Silent for a whole block: go on while the holder still holds the lease. The holder
                    # writes its terminal event before letting the lease go, so once it has gone, one
                    # more read finds that event, or there will never be one.
                    holder = await self._leases.holder(key)
                    if holder == token:
                        continue
                    if isinstance(holder, Miss):
                        raise RelayLost("unavailable", received)
                    entries = await self._read(stream, received, None)
                    if not entries:
                        raise RelayLost("ended", received)
                for entry_id, fields in entries:
                    # Entry ids are 0-1, 0-2, ...: a joiner sees every event or knows it did not.
                    if entry_id != b"0-%d" % (received + 1):
                        raise RelayLost("gap", received)
                    (kind, data), *_ = fields.items()
                    event = Relayed(kind.decode(), data)
                    if event.kind == OVERFLOW:
                        raise RelayLost("overflow", received)
                    received += 1
                    yield event
                    if event.terminal:
                        return

    async def _read(self, stream: str, after: int, block_s: float | None) -> Entries:
        """The entries after the `after`-th, waiting up to `block_s` for one (None: not at all)."""
        block_ms = None if block_s is None else max(1, round(block_s * 1000))
        reply = await self._commands.call_blocking(
            "XREAD",
            stream,
            lambda: cast(
                "Awaitable[list[list[object]]]",
                self._reader.xread({stream: f"0-{after}"}, count=READ_COUNT, block=block_ms),
            ),
            block_s=block_s or 0.0,
        )
        if isinstance(reply, Miss):
            raise RelayLost("unavailable", after)
        if not reply:
            return []
        return cast("Entries", reply[0][1])

    async def close(self) -> None:
        """Let the publishers finish writing what they have (each write is bounded by the budget), then
        close the reader's connections."""
        await asyncio.gather(*self._writers, return_exceptions=True)
        await close_client(self._reader)


class StreamPublisher:
    """Appends one generation's events to its stream, in order, without ever making the generation wait.

    `publish` queues; one writer task sends what is queued in one pipeline per round trip (so a fast
    generation is relayed in batches, not one round trip per token). Past `max_events` or `max_bytes`
    it writes an "overflow" end and stops: joiners then wait for the stored entry instead. A write that
    fails stops the publisher too: its joiners see a gap, or the lease go, and fall back.
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
        self._pending: list[tuple[int, str, bytes]] = []
        self._count = 0
        self._bytes = 0
        self._ended = False
        self.failed = False
        self._writer: asyncio.Task[None] | None = None

    def publish(self, data: bytes) -> None:
        """Relay one event (an SSE event's data) to the joiners."""
        if self._ended:
            return
        if self._count + 1 >= self._max_events or self._bytes + len(data) > self._max_bytes:
            self._queue(OVERFLOW, b"")
            return
        self._bytes += len(data)
        self._queue(EVENT, data)

    def finish(self, kind: Terminal, data: bytes = b"") -> None:
        """End the stream (the first end counts): every joiner sees `kind` as its last event."""
        if not self._ended:
            self._queue(kind, data)

    async def written(self) -> bool:
        """Wait until everything queued so far is in Redis; False when a write failed. The holder waits
        for its terminal event before letting its lease go (see StreamRelay.join)."""
        if self._writer is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._writer)
        return not self.failed

    def _queue(self, kind: str, data: bytes) -> None:
        self._ended = kind != EVENT
        if self.failed:
            return
        self._count += 1
        self._pending.append((self._count, kind, data))
        # The writer checks for more before it returns, with no await in between: a task still
        # running will send this; a finished one will not, so start another.
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write())
            # Owned by the relay until done (the loop keeps only weak references), awaited by its close.
            self._writers.add(self._writer)
            self._writer.add_done_callback(self._writers.discard)

    async def _write(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            # The stream lives as long as a generation may run from its first event, and a little past
            # its end; between those, an event is one XADD (a pipeline costs the holder half as much again).
            first = batch[0][0] == 1
            expire_ms = self._linger_ms if batch[-1][1] != EVENT else self._ttl_ms if first else None
            reply = await self._commands.call(
                "XADD", self.stream, functools.partial(self._send, batch, expire_ms)
            )
            if isinstance(reply, Miss):
                self.failed = True
                self._pending.clear()
                return

    async def _send(self, batch: list[tuple[int, str, bytes]], expire_ms: int | None) -> object:
        client = self._commands.client
        # An exact MAXLEN as a bound of last resort: the publisher stops before reaching it.
        if len(batch) == 1 and expire_ms is None:
            number, kind, data = batch[0]
            return await client.xadd(
                self.stream, {kind: data}, id=f"0-{number}", maxlen=self._max_events, approximate=False
            )
        pipe = client.pipeline(transaction=False)
        for number, kind, data in batch:
            pipe.xadd(self.stream, {kind: data}, id=f"0-{number}", maxlen=self._max_events, approximate=False)
        if expire_ms is not None:
            pipe.pexpire(self.stream, expire_ms)
        return await pipe.execute()
