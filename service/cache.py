"""Where predictions are kept: one backend protocol, an embedded memory backend and a Redis backend.

Backends store bytes under a key with a time to live. The Redis backend fails open: any error or
timeout is logged, counted and reported as a miss (or a write not done), never raised into a request.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from typing import Literal, Protocol, TypeVar, cast

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisClusterException, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from service.breaker import CircuitBreaker
from service.metrics import Metrics
from service.topology import RedisClient, close_client, describe

log = logging.getLogger(__name__)

CacheState = Literal["ok", "degraded"]
T = TypeVar("T")


class Miss(enum.Enum):
    """A command's stand-in reply when the store could not answer (error, timeout, breaker open)."""

    UNAVAILABLE = "unavailable"


class CacheBackend(Protocol):
    """A key-value store with expiry that never raises into a request."""

    @property
    def state(self) -> CacheState: ...

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None] | Miss:
        """The value under each key (None where absent), or Miss.UNAVAILABLE."""

    async def set(self, key: str, value: bytes, ttl_s: float) -> bool:
        """Store `value` for `ttl_s` seconds; False when the store could not."""

    async def delete(self, key: str) -> bool:
        """Remove `key`; False when the store could not."""

    async def incr(self, key: str) -> int | Miss:
        """Add one to the counter under `key` (which never expires) and return it."""

    async def close(self) -> None: ...


class MemoryBackend:
    """An in-process LRU with per-entry expiry: the cache of a service started without Redis."""

    def __init__(self, max_entries: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._counters: dict[str, int] = {}  # kept apart from the LRU: a counter must never be evicted

    state: CacheState = "ok"

    def __len__(self) -> int:
        return len(self._entries)

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None] | Miss:
        return [self._get(key) for key in keys]

    def _get(self, key: str) -> bytes | None:
        item = self._entries.get(key)
        if item is None:
            counter = self._counters.get(key)
            return None if counter is None else str(counter).encode()
        expires_at, value = item
        if self._clock() >= expires_at:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return value

    async def set(self, key: str, value: bytes, ttl_s: float) -> bool:
        self._entries[key] = (self._clock() + ttl_s, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return True

    async def delete(self, key: str) -> bool:
        self._entries.pop(key, None)
        return True

    async def incr(self, key: str) -> int | Miss:
        self._counters[key] = self._counters.get(key, 0) + 1
        return self._counters[key]

    async def close(self) -> None:
        self._entries.clear()


class RedisBackend:
    """Redis through redis.asyncio, behind a circuit breaker; every failure is a miss.

    `client` is one Redis, a Sentinel-managed primary or a Redis Cluster (see topology.py): all keys
    one command names share a hash slot (see keyspace.py), so the commands are the same for all three.
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
        self.breaker = breaker
        self._metrics = metrics
        self.timeout_s = timeout_s
        self._owns_client = owns_client
        # redis-py's cluster client fails a command at once when a node's pool is full, where the
        # single-Redis pool waits: bound the commands in flight so that every mode waits (in the budget).
        self._commands = asyncio.Semaphore(max_commands) if max_commands is not None else None
        self._refusal_logged_at: dict[str, float] = {}
        # A batch reads keys of many slots: a cluster splits the MGET by slot (each key's entry and
        # generation still share one), where one Redis answers it in one command.
        self._mget = client.mget_nonatomic if isinstance(client, RedisCluster) else client.mget

    @property
    def state(self) -> CacheState:
        return "ok" if self.breaker.is_closed else "degraded"

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None] | Miss:
        # Without decode_responses, redis-py replies bytes; its stubs cannot know that.
        return await self.call("MGET", lambda: cast("Awaitable[list[bytes | None]]", self._mget(keys)))

    async def set(self, key: str, value: bytes, ttl_s: float) -> bool:
        px = max(1, round(ttl_s * 1000))
        if isinstance(await self.call("SET", lambda: self.client.set(key, value, px=px)), Miss):
            self._metrics.cache_write_errors.inc()
            return False
        return True

    async def delete(self, key: str) -> bool:
        return not isinstance(await self.call("DEL", lambda: self.client.delete(key)), Miss)

    async def incr(self, key: str) -> int | Miss:
        return await self.call("INCR", lambda: self.client.incr(key))

    async def call(self, command: str, call: Callable[[], Awaitable[T]]) -> T | Miss:
        """The command's reply, or Miss.UNAVAILABLE when the breaker is open or the command failed."""
        if not self.breaker.allow():
            return Miss.UNAVAILABLE
        try:
            # A hard budget on top of the socket timeouts: waiting for the pool, connecting and reading
            # all count. redis-py drops a connection whose command was cancelled, so a late reply can
            # never reach the next user of that connection.
            async with asyncio.timeout(self.timeout_s):
                if self._commands is None:
                    reply = await call()
                else:
                    async with self._commands:
                        reply = await call()
        except ResponseError as exc:
            # OOM under noeviction, READONLY replica, WRONGTYPE: Redis is reachable but refused this
            # command. Fail this one request open without opening the breaker for everybody.
            self.breaker.record_success()
            self._metrics.cache_refusals.inc()
            # Under OOM every write is refused: one line per command per cool-down, not per request.
            now = time.monotonic()
            if now - self._refusal_logged_at.get(command, -math.inf) >= self.breaker.cooldown_s:
                self._refusal_logged_at[command] = now
                log.warning("redis %s refused: %s", command, exc)
            return Miss.UNAVAILABLE
        except (RedisError, RedisClusterException, OSError, TimeoutError, RuntimeError) as exc:
            # RedisClusterException is not a RedisError: a cluster mid-failover raises
            # SlotNotCoveredError, which must be a miss like any other failure, never a 500. Nor is
            # uvloop's RuntimeError on a closed transport, raised when a slot map refresh closes the
            # connections of a node it replaced while a command was starting on one of them.
            self._failed(command, exc)
            return Miss.UNAVAILABLE
        except asyncio.CancelledError:
            # The client hung up mid-command. That says nothing about Redis, but a cancelled probe
            # must hand its slot back, or the breaker would wait for its verdict forever.
            self.breaker.release_probe()
            raise
        self.breaker.record_success()
        return reply

    def record_failure(self, command: str, exc: BaseException) -> None:
        """A failure seen outside `call` (the pub/sub reader) counts like any other."""
        self._failed(command, exc)

    def _failed(self, command: str, exc: BaseException) -> None:
        was_closed = self.breaker.is_closed
        # A timeout costs the request the whole budget; a request makes up to three commands (read,
        # lease, write), so waiting for three timeouts would add three budgets to its latency. One
        # timeout opens the breaker; a refused connection costs nothing and counts towards three.
        self.breaker.record_failure(trip=isinstance(exc, TimeoutError | RedisTimeoutError))
        if was_closed and not self.breaker.is_closed:
            self._metrics.breaker_opened.inc()
            log.warning(
                "redis %s failed (%s: %s); serving without cache, next probe in %.1f s",
                command,
                type(exc).__name__,
                exc,
                self.breaker.cooldown_s,
            )
        else:
            log.debug("redis %s failed: %s: %s", command, type(exc).__name__, exc)

    async def describe(self) -> dict[str, object]:
        """For /readyz: the mode and how many nodes answer (bounded by the command budget)."""
        return await describe(self.client, timeout_s=self.timeout_s)

    async def close(self) -> None:
        if self._owns_client:
            await close_client(self.client)
