"""Generations in progress in this process, by cache key: each one's events, kept in order from the
first, so any number of listeners can read a stream from its start while it is still being written.

The seam for fan-out (issue #20). A generation writes through `EventSink` (`append`, then one `end`);
`EventLog` is the in-process sink, and the one every listener here reads. Across replicas, the lease
holder's generation can write to a second sink that publishes each event (Redis Streams), and a
replica waiting on that lease can `produce` the key's EventLog here and fill it from what it reads,
so its listeners follow a generation running elsewhere as if it ran here.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class LoggedEvent:
    encoded: bytes  # the event as every listener is sent it: encoded once, written by each
    usage_only: bool  # a usage chunk: sent only to a listener who asked for usage


@dataclass(frozen=True, slots=True)
class Ending:
    """How a generation ended. `complete`: the answer is whole (and stored); else `reason` says what
    went wrong, and `cut` whether the upstream's stream stopped without its end (cut, timed out),
    which a listener's connection then does too, rather than end as if the answer were whole."""

    complete: bool
    reason: str | None = None
    cut: bool = False


COMPLETE = Ending(complete=True)


class EventSink(Protocol):
    def append(self, event: LoggedEvent) -> None: ...

    def end(self, ending: Ending) -> None: ...


class EventLog:
    """One generation's events. `begin` once it runs; `append` each event; `end` once."""

    def __init__(self) -> None:
        self.events: list[LoggedEvent] = []
        self.begun = False
        self.streaming = False  # the upstream is streaming it: events will come
        self.ending: Ending | None = None
        self.listeners = 0
        self.remote = False  # followed from another replica's generation (see fanout.py)
        # Replaced on every change: whoever waited on the old one wakes; nobody can miss a change
        # between looking and waiting, since nothing else runs in between.
        self._changed = asyncio.Event()

    def begin(self, *, streaming: bool) -> None:
        self.begun = True
        self.streaming = streaming
        self._notify()

    def append(self, event: LoggedEvent) -> None:
        self.events.append(event)
        self._notify()

    def end(self, ending: Ending) -> None:
        if self.ending is None:
            self.ending = ending
            self._notify()

    async def changed(self) -> None:
        """Return at the next change (an event, the beginning, the end)."""
        await self._changed.wait()

    async def follow(self) -> AsyncIterator[LoggedEvent]:
        """Every event from the first, then each as it is appended, until the end."""
        seen = 0
        while True:
            while seen < len(self.events):
                seen += 1
                yield self.events[seen - 1]
            if self.ending is not None:
                return
            await self._changed.wait()

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()


class LiveGenerations:
    """The EventLog of each key being generated or listened for in this process."""

    def __init__(self) -> None:
        self._logs: dict[str, EventLog] = {}

    def __len__(self) -> int:
        return len(self._logs)

    def awaits(self, key: str) -> bool:
        """Whether somebody here listens for a generation of `key` that has not begun here."""
        log = self._logs.get(key)
        return log is not None and log.listeners > 0 and not log.begun

    @contextlib.contextmanager
    def listen(self, key: str) -> Iterator[EventLog]:
        """The key's log, made now if no generation of it runs yet: one that starts meanwhile (this
        request's own fill, or another's) writes to it."""
        log = self._logs.get(key)
        if log is None:
            log = self._logs[key] = EventLog()
        log.listeners += 1
        try:
            yield log
        finally:
            log.listeners -= 1
            if not log.begun and not log.listeners and self._logs.get(key) is log:
                del self._logs[key]

    @contextlib.contextmanager
    def produce(self, key: str, *, streaming: bool) -> Iterator[EventLog]:
        """The log a generation of `key` writes to, begun; ended (as failed, unless the generation
        ended it) and forgotten when the block exits. A generation is the key's only one in this
        process (single-flight); were another still running, this one gets a log of its own."""
        log = self._logs.get(key)
        if log is None or log.begun:
            log = EventLog()
            if key not in self._logs:
                self._logs[key] = log
        log.begin(streaming=streaming)
        try:
            yield log
        except asyncio.CancelledError:
            log.end(Ending(complete=False, reason="the generation was cancelled", cut=True))
            raise
        except BaseException as exc:
            log.end(Ending(complete=False, reason=str(exc) or type(exc).__name__, cut=True))
            raise
        finally:
            # Listeners keep their reference and read to the end; a newcomer starts afresh (a hit).
            if self._logs.get(key) is log:
                del self._logs[key]
