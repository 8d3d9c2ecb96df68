"""Filling a key once for the whole fleet: the replica holding the key's lease calls the model, the
others wait for its "stored" (or "failed") event and read what it stored.

See lease.py for the race this prevents. A waiter gives up waiting, and computes itself, only past
the holder's model timeout plus one lease lifetime: by then the holder has answered or died.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any

from service.caching.backends import Miss
from service.caching.entry import CachedPrediction, Generation
from service.errors import ModelError, ModelTimeout, UnknownInput
from service.metrics import Metrics
from service.redis.events import Events
from service.redis.lease import Leases
from service.redis.streams import StreamRelay

# How often a replica waiting on another's lease re-reads the cache and retries the lease, in case
# the "stored" event was lost or the holder died.
LEASE_POLL_S = 0.1


@dataclass(frozen=True, slots=True)
class Filled:
    """The result of one fill of a key, shared by every request that waited for it."""

    entry: CachedPrediction
    stored: bool
    from_other_replica: bool


# What a fill needs from the cache it fills: a read of the key (its generation and entry, if any)
# and a model call stored under a generation.
Read = Callable[[], Awaitable[tuple[Generation, CachedPrediction | None]]]
Compute = Callable[[Generation], Awaitable[Filled]]


class Fleet:
    """What a replica needs to share model calls with the other replicas of one Redis."""

    def __init__(
        self,
        leases: Leases,
        events: Events,
        *,
        metrics: Metrics,
        lease_ttl_s: float,
        model_timeout_s: float,
        relay: StreamRelay | None = None,
    ) -> None:
        self.leases = leases
        self.events = events
        # Streamed generations relayed live to the other replicas (None: they wait for the end).
        self.relay = relay
        # The keys this replica waits for another replica to fill, and who wants to hear of each.
        self.remote_fills: dict[str, int] = {}
        self._remote_fill_listeners: list[Callable[[str], None]] = []
        self._metrics = metrics
        self._lease_ttl_s = lease_ttl_s
        self._model_timeout_s = model_timeout_s
        self._background: set[asyncio.Task[None]] = set()

    def add_remote_fill_listener(self, listener: Callable[[str], None]) -> None:
        """Call `listener(key)` when this replica starts waiting for another one to fill `key`."""
        self._remote_fill_listeners.append(listener)

    async def fill(
        self, key: str, label: str, generation: Generation, newer_than: float, *, read: Read, compute: Compute
    ) -> Filled:
        """A prediction newer than `newer_than`: computed here, or by the replica holding the lease."""
        loop = asyncio.get_running_loop()
        # The holder's call takes at most the model timeout; its lease lapses at most a lease later
        # if it died. Past both, something is wrong with the lease: compute here.
        deadline = loop.time() + self._model_timeout_s + self._lease_ttl_s
        waited = False
        # Watch before the first attempt: an event published after this line is never missed.
        with self.events.watch(key) as watch, self._remote_fill(key) as waiting:
            while True:
                token = await self.leases.try_acquire(key)
                if isinstance(token, Miss):
                    self._metrics.lease_fallbacks.inc()  # Redis is down: this replica's single-flight only
                    waiting.stop()
                    return await compute(generation)
                if token is not None:
                    waiting.stop()
                    return await self._fill_holding(key, generation, newer_than, token, read, compute, waited)
                if not waited:
                    waited = True
                    self._metrics.lease_waits.inc()
                    waiting.start()
                remaining = deadline - loop.time()
                if remaining <= 0:
                    self._metrics.lease_timeouts.inc()
                    waiting.stop()
                    return await compute(generation)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(LEASE_POLL_S, remaining)):
                        await watch.woken.wait()
                watch.woken.clear()
                # The holder's model failed: its waiters here get the same answer as its own, rather
                # than a second model call (and, for a hanging model, a second timeout).
                if watch.failure == "timeout":
                    raise ModelTimeout(label, self._model_timeout_s)
                if watch.failure == "error":
                    raise ModelError(label, "the model failed on the replica computing it")
                if watch.failure == "unknown":
                    raise UnknownInput(f"the model does not predict {label}")
                generation, entry = await read()
                if entry is not None and entry.predicted_at > newer_than:
                    return Filled(entry, stored=False, from_other_replica=True)

    @contextlib.contextmanager
    def _remote_fill(self, key: str) -> Iterator[_RemoteFill]:
        waiting = _RemoteFill(self, key)
        try:
            yield waiting
        finally:
            waiting.stop()

    async def _fill_holding(
        self,
        key: str,
        generation: Generation,
        newer_than: float,
        token: str,
        read: Read,
        compute: Compute,
        waited: bool,
    ) -> Filled:
        outcome = ""
        try:
            if waited:
                # The holder we waited for may have stored and released between our last read
                # and our SET NX: check again before calling the model.
                generation, entry = await read()
                if entry is not None and entry.predicted_at > newer_than:
                    return Filled(entry, stored=False, from_other_replica=True)
            try:
                async with self.leases.renewing(key, token):
                    filled = await compute(generation)
            except ModelTimeout:
                outcome = "|timeout"
                raise
            except ModelError:
                outcome = "|error"
                raise
            except UnknownInput:
                outcome = "|unknown"
                raise
            if filled.stored:
                outcome = "stored"
            return filled
        finally:
            # This replica's waiters have their answer; the other replicas' waiters learn of it (and
            # the lease goes) without adding two round trips to this response.
            self._spawn(self._announce(key, token, outcome))

    async def _announce(self, key: str, token: str, outcome: str) -> None:
        """Tell the other replicas how the call went ("stored", or "|timeout"/"|error"/"|unknown"),
        then let the lease go. Nothing is published when there is nothing to say (the store failed)."""
        if outcome:
            await self.events.publish(key if outcome == "stored" else key + outcome)
        await self.leases.release(key, token)

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        # Referenced until done (the loop keeps only weak references), and awaited by close().
        task = asyncio.create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def close(self) -> None:
        """Finish the announcements and relays still going out, then stop listening."""
        await asyncio.gather(*self._background, return_exceptions=True)
        if self.relay is not None:
            await self.relay.close()
        await self.events.close()


class _RemoteFill:
    """One fill's part in `Fleet.remote_fills`: counted from when it first waits for another replica
    until it stops waiting (it answers, or computes itself)."""

    def __init__(self, fleet: Fleet, key: str) -> None:
        self._fleet = fleet
        self._key = key
        self._counted = False

    def start(self) -> None:
        fleet, key = self._fleet, self._key
        self._counted = True
        fleet.remote_fills[key] = fleet.remote_fills.get(key, 0) + 1
        for listener in fleet._remote_fill_listeners:
            listener(key)

    def stop(self) -> None:
        if not self._counted:
            return
        self._counted = False
        remote = self._fleet.remote_fills
        remote[self._key] -= 1
        if not remote[self._key]:
            del remote[self._key]  # the table holds only keys being waited for
