"""Cache events between replicas over one Redis pub/sub channel: "K was stored", "K's model call
failed", "the cache was cleared".

Each process keeps one subscription; waiters register before they look, so an event published after
they register is never missed. Pub/sub is best effort: waiters also poll, slowly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from service.cache import RedisBackend

log = logging.getLogger(__name__)


# A failed model call is published as "<key>|timeout" or "<key>|error", so that waiters on other
# replicas answer with the same error instead of calling the model again.
FAILURES = ("timeout", "error")


@dataclass(eq=False)
class Watch:
    """What a waiter for one key learns: that something happened, and whether the call failed."""

    woken: asyncio.Event = field(default_factory=asyncio.Event)
    failure: str | None = None  # one of FAILURES


class Events:
    def __init__(self, backend: RedisBackend, channel: str) -> None:
        self._backend = backend
        self.channel = channel
        self._waiters: dict[str, set[Watch]] = {}
        self._listeners: list[Callable[[str], None]] = []
        self._reader: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._reader = asyncio.create_task(self._read_forever())

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader

    def add_listener(self, listener: Callable[[str], None]) -> None:
        """Call `listener(message)` for every event any replica publishes."""
        self._listeners.append(listener)

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

    async def publish(self, message: str) -> None:
        await self._backend.call("PUBLISH", lambda: self._backend.client.publish(self.channel, message))

    def _dispatch(self, message: str) -> None:
        key, _, failure = message.partition("|")
        for watch in self._waiters.get(key, ()):
            watch.failure = failure if failure in FAILURES else None
            watch.woken.set()
        if not failure:
            for listener in self._listeners:
                listener(key)

    async def _read_forever(self) -> None:
        breaker = self._backend.breaker
        while True:
            # While Redis is down, requests probe it once per cool-down; the subscriber waits for
            # one of them to find it back instead of adding reconnection attempts of its own.
            await breaker.wait_closed()
            pubsub = self._backend.client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                # redis-py's PubSub reconnects by itself inside get_message; stop reading while the
                # breaker is open, or it would keep dialling a dead Redis once a second.
                while breaker.is_closed:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None and message["type"] == "message":
                        data = message["data"]
                        self._dispatch(data.decode() if isinstance(data, bytes) else str(data))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # The connection broke: count it against Redis, and let waiters poll meanwhile.
                self._backend.record_failure("SUBSCRIBE", exc)
                await asyncio.sleep(breaker.cooldown_s)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
