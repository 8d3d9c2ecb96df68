"""Streamed generations shared with the other replicas (redis/streams.py carries them): the lease
holder's generation also publishes each event, and a replica waiting on that lease follows it into the
key's live log here, so its listeners get every event so far at once, then each as it comes.

Whatever the relay cannot do, the replica's listeners get what a replica without it gives them: the
stored answer replayed once the holder has stored it (nothing was relayed yet), or, once some events
were relayed, the same abnormal end a cut generation gives (see `RemoteGenerations._follow`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping

from service.openai.live import COMPLETE, Ending, EventLog, EventSink, LiveGenerations, LoggedEvent
from service.redis.stream_publisher import StreamPublisher, Terminal
from service.redis.streams import Relayed, RelayLost, StreamRelay

log = logging.getLogger(__name__)

# The first byte of a relayed event: whether only a listener who asked for usage is sent it.
_USAGE, _EVENT = b"u", b"e"


class RelayedLog:
    """The lease holder's sink: each event to this process's listeners (its log) and to the other
    replicas' (the stream's publisher), and the same end to both."""

    def __init__(self, log: EventLog, publisher: StreamPublisher) -> None:
        self._log = log
        self._publisher = publisher

    def append(self, event: LoggedEvent) -> None:
        self._log.append(event)
        self._publisher.publish((_USAGE if event.usage_only else _EVENT) + event.encoded)

    def end(self, ending: Ending) -> None:
        self._log.end(ending)
        kind: Terminal = "completed" if ending.complete else "cut" if ending.cut else "failed"
        self._publisher.finish(kind, (ending.reason or "").encode())


class RemoteGenerations:
    """This process's part in sharing streamed generations with the other replicas of one Redis.

    `held` is the leases this replica holds (key to token, see Leases.held), `remote_fills` the keys it
    waits for another replica to fill (see Fleet.remote_fills), `failed(key)` tells its fill of a key
    that the generation it waits for failed. One follower per key at a time reads the relay, however
    many listeners here.
    """

    def __init__(
        self,
        live: LiveGenerations,
        relay: StreamRelay | None,
        *,
        held: Mapping[str, str],
        remote_fills: Mapping[str, int],
        failed: Callable[[str], None] = lambda _key: None,
    ) -> None:
        self._live = live
        self._relay = relay
        self._held = held
        self._remote_fills = remote_fills
        self._failed = failed
        self._followers: dict[str, asyncio.Task[None]] = {}

    @contextlib.asynccontextmanager
    async def publishing(self, key: str, log: EventLog) -> AsyncIterator[EventSink]:
        """What the generation of `key` writes to: `log`, and the relay when this replica holds the
        key's lease (a generation without it, Redis being down, has nobody else to tell)."""
        token = self._held.get(key)
        if self._relay is None or token is None:
            yield log
            return
        async with self._relay.publishing(key, token) as publisher:
            yield RelayedLog(log, publisher)

    def remote_fill_started(self, key: str) -> None:
        """This replica waits for another one to fill `key` (Fleet's listener): follow it when
        somebody here listens for it."""
        if self._live.awaits(key):
            self.follow(key)

    def listener_arrived(self, key: str) -> None:
        """A streamed request for `key` found no generation here: follow one running elsewhere."""
        if key in self._remote_fills:
            self.follow(key)

    def follow(self, key: str) -> None:
        if self._relay is None or key in self._followers or key in self._held:
            return
        task = asyncio.create_task(self._follow(self._relay, key))
        self._followers[key] = task
        task.add_done_callback(lambda _: self._followers.pop(key, None))

    async def _follow(self, relay: StreamRelay, key: str) -> None:
        """Fill the key's log here from the relay. Before any event nothing is begun, so a relay that
        cannot start leaves the listeners to the stored answer; after some, they have been sent part
        of an answer that only this generation continues, so a relay lost then cuts their streams."""
        async with contextlib.aclosing(relay.join(key)) as join:
            try:
                event = await anext(join)
            except (RelayLost, StopAsyncIteration) as lost:
                log.debug("not following %s: %s", key, lost)
                return
            with self._live.produce(key, streaming=True) as followed:
                followed.remote = True
                try:
                    while not event.terminal:
                        followed.append(_logged(event))
                        event = await anext(join)
                except RelayLost as lost:
                    followed.end(
                        Ending(
                            complete=False, reason=f"the relay from its replica was lost: {lost}", cut=True
                        )
                    )
                    return
                followed.end(_ending(event))
                if event.kind != "completed":
                    # This replica's fill of the key learns of the failure now, not from the holder's
                    # event after its lease has gone, when it could take the lease and ask again.
                    self._failed(key)

    async def close(self) -> None:
        tasks = list(self._followers.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _logged(event: Relayed) -> LoggedEvent:
    return LoggedEvent(event.data[1:], usage_only=event.data[:1] == _USAGE)


def _ending(event: Relayed) -> Ending:
    if event.kind == "completed":
        return COMPLETE
    reason = event.data.decode(errors="replace") or f"the generation {event.kind} on its replica"
    return Ending(complete=False, reason=reason, cut=event.kind == "cut")
