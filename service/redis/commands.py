"""Redis commands that fail open: each goes to its key's node, behind that node's circuit breaker and
within the command budget; any error or timeout is logged, counted and answered as `Miss.UNAVAILABLE`,
never raised into a request. The cache backend, the leases and the events all send through it.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Literal, TypeVar

from redis.exceptions import RedisClusterException, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from service.metrics import Metrics
from service.redis.breaker import CircuitBreaker
from service.redis.nodes import Node, Nodes
from service.redis.topology import RedisClient, close_client, describe

log = logging.getLogger(__name__)

CacheState = Literal["ok", "degraded"]
T = TypeVar("T")


class Miss(enum.Enum):
    """A command's stand-in reply when the store could not answer (error, timeout, breaker open)."""

    UNAVAILABLE = "unavailable"


class RedisCommands:
    """Redis through redis.asyncio, behind a circuit breaker per node; every failure is a miss.

    `client` is one Redis, a Sentinel-managed primary or a Redis Cluster (see topology.py): all keys
    one command names share a hash slot (see keyspace.py), so the commands are the same for all three.
    Each command names the key that picks its node (see nodes.py): in a cluster, a failing primary
    opens the breaker of its own keys only.
    """

    def __init__(
        self,
        client: RedisClient,
        *,
        metrics: Metrics,
        timeout_s: float,
        breaker: CircuitBreaker,
        owns_client: bool = True,
        max_commands: int | None = None,
    ) -> None:
        self.client = client
        # redis-py's cluster client fails a command at once when a node's pool is full, where the
        # single-Redis pool waits: bound the commands in flight so that every mode waits (in the budget).
        self.nodes = Nodes(client, breaker, max_commands=max_commands)
        self._metrics = metrics
        self.timeout_s = timeout_s
        self._owns_client = owns_client
        self._refusal_logged_at: dict[str, float] = {}

    @property
    def breaker(self) -> CircuitBreaker:
        """One Redis's breaker (in a cluster, the pattern of every node's)."""
        return self.nodes.single.breaker

    @breaker.setter
    def breaker(self, breaker: CircuitBreaker) -> None:
        self.nodes.single.breaker = breaker

    @property
    def state(self) -> CacheState:
        # In a cluster, degraded while any shard's keys are served without the cache.
        return "ok" if self.nodes.all_closed else "degraded"

    def is_available(self, key: str) -> bool:
        """Whether commands about `key` are being sent (its node's breaker is closed)."""
        node = self.nodes.for_key(key)
        return node is not None and node.breaker.is_closed

    async def wait_available(self, key: str) -> None:
        """Return once commands about `key` are sent again: a request's probe found its node back,
        or (in a cluster) another node took over its slot."""
        while True:
            node = self.nodes.for_key(key)
            if node is not None and node.breaker.is_closed:
                return
            if node is None:
                self.nodes.refresh_topology()
                await asyncio.sleep(self.breaker.cooldown_s)
                continue
            with contextlib.suppress(TimeoutError):
                # Bounded: in a cluster nobody probes a node that lost its slots to a replica.
                async with asyncio.timeout(node.breaker.cooldown_s):
                    await node.breaker.wait_closed()

    async def call(self, command: str, key: str, call: Callable[[], Awaitable[T]]) -> T | Miss:
        """The reply of a command about `key` (which picks the node), or Miss.UNAVAILABLE when that
        node's breaker is open or the command failed."""
        return await self._call_on(self.nodes.for_key(key), command, call)

    async def call_blocking(
        self, command: str, key: str, call: Callable[[], Awaitable[T]], *, block_s: float
    ) -> T | Miss:
        """`call` for a command Redis holds up to `block_s` (XREAD BLOCK) on a connection of its own
        (see streams.py): its budget is `block_s` longer, and it takes none of the node's command slots,
        which would otherwise be held for the whole block."""
        return await self._call_on(
            self.nodes.for_key(key), command, call, budget_s=self.timeout_s + block_s, bounded=False
        )

    async def _call_on(
        self,
        node: Node | None,
        command: str,
        call: Callable[[], Awaitable[T]],
        *,
        budget_s: float | None = None,
        bounded: bool = True,
    ) -> T | Miss:
        if node is None or not node.breaker.allow():
            # Until a slot map shows a live primary for these keys, they are served without cache.
            self.nodes.refresh_topology()
            return Miss.UNAVAILABLE
        breaker = node.breaker
        try:
            # A hard budget on top of the socket timeouts: waiting for the pool, connecting and reading
            # all count. redis-py drops a connection whose command was cancelled, so a late reply can
            # never reach the next user of that connection.
            async with asyncio.timeout(self.timeout_s if budget_s is None else budget_s):
                if node.commands is None or not bounded:
                    reply = await call()
                else:
                    async with node.commands:
                        reply = await call()
        except ResponseError as exc:
            # OOM under noeviction, READONLY replica, WRONGTYPE: Redis is reachable but refused this
            # command. Fail this one request open without opening the breaker for everybody.
            breaker.record_success()
            self._metrics.cache_refusals.inc()
            # Under OOM every write is refused: one line per command per cool-down, not per request.
            now = time.monotonic()
            if now - self._refusal_logged_at.get(command, -math.inf) >= breaker.cooldown_s:
                self._refusal_logged_at[command] = now
                log.warning("redis %s refused: %s", command, exc)
            return Miss.UNAVAILABLE
        except (RedisError, RedisClusterException, OSError, TimeoutError, RuntimeError) as exc:
            # RedisClusterException is not a RedisError: a cluster mid-failover raises
            # SlotNotCoveredError, which must be a miss like any other failure, never a 500. Nor is
            # uvloop's RuntimeError on a closed transport, raised when a slot map refresh closes the
            # connections of a node it replaced while a command was starting on one of them.
            self._failed(command, node, exc)
            return Miss.UNAVAILABLE
        except asyncio.CancelledError:
            # The client hung up mid-command. That says nothing about Redis, but a cancelled probe
            # must hand its slot back, or the breaker would wait for its verdict forever.
            breaker.release_probe()
            raise
        breaker.record_success()
        return reply

    def record_failure(self, command: str, key: str, exc: BaseException) -> None:
        """A failure about `key` seen outside `call` (the pub/sub reader) counts like any other."""
        node = self.nodes.for_key(key)
        if node is not None:
            self._failed(command, node, exc)

    def _failed(self, command: str, node: Node, exc: BaseException) -> None:
        breaker = node.breaker
        was_closed = breaker.is_closed
        # A timeout costs the request the whole budget; a request makes up to three commands (read,
        # lease, write), so waiting for three timeouts would add three budgets to its latency. One
        # timeout opens the breaker; a refused connection costs nothing and counts towards three.
        breaker.record_failure(trip=isinstance(exc, TimeoutError | RedisTimeoutError))
        # A failover may have moved the node's slots: in a cluster, re-read the map (beside the
        # commands, see topology.FailFastCluster), so the next command goes to the new primary.
        self.nodes.refresh_topology(node)
        if was_closed and not breaker.is_closed:
            self._metrics.breaker_opened.inc()
            log.warning(
                "redis %s failed on %s (%s: %s); serving its keys without cache, next probe in %.1f s",
                command,
                node.name,
                type(exc).__name__,
                exc,
                breaker.cooldown_s,
            )
        else:
            log.debug("redis %s failed: %s: %s", command, type(exc).__name__, exc)

    async def describe(self) -> dict[str, object]:
        """For /readyz: the mode and how many nodes answer (bounded by the command budget); in a
        cluster, the primaries whose breaker is open."""
        described = await describe(self.client, timeout_s=self.timeout_s)
        if described["mode"] == "cluster":
            described["breakers_open"] = self.nodes.open_primaries()
        return described

    async def close(self) -> None:
        if self._owns_client:
            await close_client(self.client)
