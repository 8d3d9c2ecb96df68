"""A generation's events relayed to other replicas through a Redis Stream: once a replica asks (pub/sub),
the lease holder appends every event so far, then each new one, then a terminal one; joiners on any
replica read from the first event and block for the rest.

Fails open like every Redis command: when the relay cannot go on, a joiner learns it by `RelayLost` and
does what a replica without the relay does (wait for the stored entry, or compute).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import cast

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.sentinel import SentinelConnectionPool

from service.redis import keyspace
from service.redis.commands import Miss, RedisCommands
from service.redis.events import JOIN, Events
from service.redis.lease import Leases
from service.redis.stream_publisher import (
    EVENT,
    EVENT_BYTES,
    OVERFLOW_BYTES,
    StreamPublisher,
    unframed,
)
from service.redis.topology import RedisClient, close_client, create_client

# A joiner's first XREAD waits this long for the holder to answer its request, later ones BLOCK_S; after
# a silent one it checks that the generation still runs (and asks again, in case the request was lost).
FIRST_BLOCK_S = 0.1
BLOCK_S = 1.0
# How long a finished stream stays readable: a joiner that read the holder's token just before the end.
LINGER_S = 5.0
# Entries one XREAD returns at most: a joiner arriving late gets what exists so far in a few reads.
READ_COUNT = 1024

# Events one generation relays at most (a token each): past it, joiners wait for the stored entry.
MAX_RELAYED_EVENTS = 100_000

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
    event: the holder died, or finished as the joiner asked), "timeout" (past the longest a generation
    may run).
    """

    def __init__(self, reason: str, received: int) -> None:
        super().__init__(f"stream relay lost ({reason}) after {received} events")
        self.reason = reason
        self.received = received


def reader_client(url: str, *, timeout_s: float, readers: int, block_s: float = BLOCK_S) -> RedisClient:
    """The client of a relay's blocking reads: `readers` connections (per node), whose reads may take
    a whole block longer than the command budget `timeout_s`."""
    return create_client(url, timeout_s=timeout_s + block_s, max_connections=readers)


def reader_twin(
    client: RedisClient, *, timeout_s: float, readers: int, block_s: float = BLOCK_S
) -> RedisClient | None:
    """For a client given to the service (tests, embedding) rather than made from REDIS_URL: a client
    of `readers` connections of its own to the same Redis, like `reader_client`'s; None for a cluster
    or Sentinel client, which only REDIS_URL describes fully."""
    if isinstance(client, RedisCluster) or isinstance(client.connection_pool, SentinelConnectionPool):
        return None
    pool = client.connection_pool
    settings = {**pool.connection_kwargs, "socket_timeout": timeout_s + block_s}
    return Redis(
        connection_pool=BlockingConnectionPool(
            connection_class=pool.connection_class, max_connections=readers, timeout=timeout_s, **settings
        )
    )


class StreamRelay:
    """Publishers for the generations this replica holds the lease of, joiners for everybody's.

    A holder writes nothing to Redis until some replica joins: a joiner publishes "<stream>|join" on the
    events channel, and the holder's publisher then writes every event so far in one round trip and
    each later one as it comes. So a generation nobody joins from elsewhere costs Redis nothing.

    `reader` is a client of its own for the blocking reads (XREAD BLOCK holds its connection until an
    event arrives), with a pool of `readers` connections: at most that many joins run at once here, and
    one more is refused at once ("busy") rather than waiting for a connection, so blocking reads never
    take the connections, or the command slots, of the cache's own commands.
    """

    def __init__(
        self,
        commands: RedisCommands,
        leases: Leases,
        events: Events,
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
        self._events = events
        self._reader = reader
        self._slots = asyncio.Semaphore(readers)
        self._ttl_s = ttl_s
        self._linger_s = linger_s
        self._block_s = block_s
        self._max_events = max_events
        self._max_bytes = max_bytes
        self._publishers: dict[str, StreamPublisher] = {}
        self._writers: set[asyncio.Task[None]] = set()
        events.add_join_listener(self._join_requested)

    @contextlib.asynccontextmanager
    async def publishing(self, key: str, token: str) -> AsyncIterator[StreamPublisher]:
        """The publisher of the generation running under the lease `token` on `key`, for the block.

        On leaving, a stream not finished is cut, and what joiners asked for is written: the holder
        leaves the block before it lets its lease go, so a joiner that sees the lease gone has all.
        """
        publisher = StreamPublisher(
            self._commands,
            keyspace.stream_key(key, token),
            ttl_s=self._ttl_s,
            linger_s=self._linger_s,
            max_events=self._max_events,
            max_bytes=self._max_bytes,
            writers=self._writers,
        )
        self._publishers[publisher.stream] = publisher
        try:
            yield publisher
        finally:
            publisher.finish("cut")  # nothing when it has finished
            del self._publishers[publisher.stream]
            await publisher.written()

    def _join_requested(self, stream: str) -> None:
        publisher = self._publishers.get(stream)
        if publisher is not None:
            publisher.relay()

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
            block_s = min(FIRST_BLOCK_S, self._block_s)
            # Asked while the first read is on its way: that read waits for what the ask brings.
            asking = asyncio.ensure_future(self._events.publish(f"{stream}|{JOIN}"))
            try:
                async for event in self._follow(key, token, stream, block_s):
                    yield event
            finally:
                await asking

    async def _follow(
        self, key: str, token: str, stream: str, block_s: float
    ) -> AsyncGenerator[Relayed, None]:
        """`join`'s reads of the stream of the generation `token` holds the lease of."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._ttl_s
        read = received = 0  # entries read, events yielded
        while True:
            if loop.time() > deadline:
                raise RelayLost("timeout", received)
            entries = await self._read(stream, read, block_s)
            if not entries:
                # Silent for a whole block: go on while the holder still holds the lease. The holder
                # writes what was asked before letting the lease go, so once it has gone, one more
                # read finds the end, or there will never be one.
                holder = await self._leases.holder(key)
                if holder == token:
                    if read == 0:
                        await self._events.publish(f"{stream}|{JOIN}")  # pub/sub may lose it
                    block_s = self._block_s
                    continue
                if isinstance(holder, Miss):
                    raise RelayLost("unavailable", received)
                entries = await self._read(stream, read, None)
                if not entries:
                    raise RelayLost("ended", received)
            for entry_id, fields in entries:
                # Entry ids are 0-1, 0-2, ...: a joiner sees every event or knows it did not.
                read += 1
                if entry_id != b"0-%d" % read:
                    raise RelayLost("gap", received)
                (kind, data), *_ = fields.items()
                if kind == EVENT_BYTES:
                    for event in unframed(data):
                        received += 1
                        yield Relayed(EVENT, event)
                    continue
                if kind == OVERFLOW_BYTES:
                    raise RelayLost("overflow", received)
                received += 1
                yield Relayed(kind.decode(), data)
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
