"""Cache events between replicas over one Redis pub/sub channel (a sharded one in a cluster, see
pubsub.py): "K was stored", "K's model call failed", "the cache was cleared", "relay K's generation".

Each process keeps one subscription; waiters register before they look, so an event published after
they register is never missed. Pub/sub is best effort: waiters also poll, slowly. Every message starts
with its publisher's origin, so that listeners hear only the other replicas: a replica's own "stored"
must not drop the copy it has just stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from service.redis.commands import RedisCommands
from service.redis.pubsub import ChannelMoved, PubSubRoute, route_for

log = logging.getLogger(__name__)


# A failed model call is published as "<key>|timeout", "<key>|error" or "<key>|unknown" (the model
# refused the input), so that waiters on other replicas answer with the same error instead of
# calling the model again.
FAILURES = ("timeout", "error", "unknown")
# "<stream key>|join": a replica asks the holder of a generation to relay its events (see streams.py).
JOIN = "join"

# `<origin> <message>`: the origin is this many hex digits, random per process (per Events).
ORIGIN_HEX = 16


@dataclass(eq=False)
class Watch:
    """What a waiter for one key learns: that something happened, and whether the call failed."""

    woken: asyncio.Event = field(default_factory=asyncio.Event)
    failure: str | None = None  # one of FAILURES


class Events:
    def __init__(self, backend: RedisCommands, channel: str, route: PubSubRoute | None = None) -> None:
        self._backend = backend
        self.channel = channel
        self._route = route_for(backend.client) if route is None else route
        self._waiters: dict[str, set[Watch]] = {}
        self._listeners: list[Callable[[str], None]] = []
        self._join_listeners: list[Callable[[str], None]] = []
        self._reader: asyncio.Task[None] | None = None
        self.origin = secrets.token_hex(ORIGIN_HEX // 2)

    def start(self) -> None:
        self._reader = asyncio.create_task(self._read_forever())

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader

    def add_listener(self, listener: Callable[[str], None]) -> None:
        """Call `listener(message)` for every event another replica publishes."""
        self._listeners.append(listener)

    def add_join_listener(self, listener: Callable[[str], None]) -> None:
        """Call `listener(stream)` for every "<stream>|join" any replica publishes."""
        self._join_listeners.append(listener)

    @contextlib.contextmanager
    def watch(self, key: str) -> Iterator[Watch]:
        """Woken whenever any replica publishes about `key`, for as long as the block runs."""
        watch = Watch()
        self._waiters.setdefault(key, set()).add(watch)
        try:
            yield watch
        finally:
            waiters = self._waiters[key]
            waiters.discard(watch)
            if not waiters:
                del self._waiters[key]  # the table holds only keys being waited for

    def deliver(self, message: str) -> None:
        """Act on `message` here as if it had come over the channel: what this replica learned some
        other way (a relayed generation's failed end, see streams.py) before its event arrives."""
        self._dispatch(message)

    async def publish(self, message: str) -> None:
        sent = f"{self.origin} {message}"
        await self._backend.call("PUBLISH", self.channel, lambda: self._route.publish(self.channel, sent))

    def _dispatch(self, received: str) -> None:
        origin, sep, message = received.partition(" ")
        if not sep or len(origin) != ORIGIN_HEX:
            origin, message = "", received  # from a replica of a release before origins
        key, _, failure = message.partition("|")
        if failure == JOIN:
            for listener in self._join_listeners:
                listener(key)
            return
        for watch in self._waiters.get(key, ()):
            watch.failure = failure if failure in FAILURES else None
            watch.woken.set()
        if not failure and origin != self.origin:
            for listener in self._listeners:
                listener(key)

    def _wake_all(self) -> None:
        """Wake every waiter to re-read its key: events may have been missed while unsubscribed."""
        for waiters in self._waiters.values():
            for watch in waiters:
                watch.woken.set()

    async def _read_forever(self) -> None:
        backend = self._backend
        subscribed_before = False
        while True:
            # While the channel's Redis node is down, requests probe it once per cool-down; the
            # subscriber waits for one of them to find it back (or, in a cluster, for another node to
            # take over its slot) instead of adding reconnection attempts of its own.
            await backend.wait_available(self.channel)
            subscription = None
            try:
                async with asyncio.timeout(backend.timeout_s * 4):
                    subscription = await self._route.subscribe(self.channel)
                if subscribed_before:
                    self._wake_all()
                subscribed_before = True
                # Stop reading while the breaker is open, or a broken subscription would keep
                # dialling a dead Redis once a second.
                while backend.is_available(self.channel):
                    message = await subscription.next_message(timeout_s=1.0)
                    if message is not None:
                        self._dispatch(message)
            except asyncio.CancelledError:
                raise
            except ChannelMoved:
                # Another node serves the channel now (a failover): subscribe there at once. The old
                # node may be frozen rather than dead, so its connection would never say so itself.
                pass
            except Exception as exc:
                # The connection broke (a failover, a restart): count it against Redis, let waiters
                # poll meanwhile, then subscribe afresh (to the new primary).
                backend.record_failure("SUBSCRIBE", self.channel, exc)
                await asyncio.sleep(backend.breaker.cooldown_s)
            finally:
                if subscription is not None:
                    await subscription.aclose()
