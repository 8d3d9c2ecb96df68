"""Where predictions are kept: one backend protocol, an embedded memory backend and a Redis backend.

Backends store bytes under a key with a time to live. The Redis backend fails open: any error or
timeout is logged, counted and reported as a miss (or a write not done), never raised into a request.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol, cast

from redis.asyncio.cluster import RedisCluster

from service.caching import footprint
from service.metrics import Metrics
from service.redis.breaker import CircuitBreaker
from service.redis.commands import CacheState, Miss, RedisCommands
from service.redis.nodes import Node
from service.redis.topology import RedisClient

__all__ = ["CacheBackend", "CacheState", "MemoryBackend", "Miss", "RedisBackend"]


class CacheBackend(Protocol):
    """A key-value store with expiry that never raises into a request."""

    @property
    def state(self) -> CacheState: ...

    async def get_many(self, keys: Sequence[str]) -> Sequence[bytes | Miss | None] | Miss:
        """The value under each key (None where absent), or Miss.UNAVAILABLE for all of them or (in a
        cluster, where a node could not answer) for some."""

    async def set(self, key: str, value: bytes, ttl_s: float) -> bool:
        """Store `value` for `ttl_s` seconds; False when the store could not."""

    async def delete(self, key: str) -> bool:
        """Remove `key`; False when the store could not."""

    async def advance(self, key: str, floor: int, step: int = 0) -> tuple[int | None, int] | Miss:
        """Set the counter under `key` (which never expires) to `step` more than the higher of its
        value and `floor`: never lower. Its value before (None where absent) and after."""

    async def close(self) -> None: ...


# What an entry of the memory backend costs besides its key and value: its (expiry, value) tuple,
# the expiry float and its slot in the table.
_ENTRY = footprint.of((0.0, b"")) + footprint.FLOAT + footprint.ORDERED_SLOT


def entry_bytes(key: str, value: bytes) -> int:
    """The memory an entry of the memory backend takes, all included: what its `max_bytes` counts."""
    return _ENTRY + footprint.of(key) + footprint.of(value)


class MemoryBackend:
    """An in-process LRU with per-entry expiry: the cache of a service started without Redis.
    Bounded in entries and in bytes of memory (entry_bytes); the least recently used go first."""

    def __init__(
        self, max_entries: int, max_bytes: int = sys.maxsize, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._bytes = 0
        self._counters: dict[str, int] = {}  # kept apart from the LRU: a counter must never be evicted

    state: CacheState = "ok"

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def memory_bytes(self) -> int:
        """Memory the entries take (see entry_bytes), at most `max_bytes`."""
        return self._bytes

    async def get_many(self, keys: Sequence[str]) -> Sequence[bytes | Miss | None] | Miss:
        return [self._get(key) for key in keys]

    def _get(self, key: str) -> bytes | None:
        item = self._entries.get(key)
        if item is None:
            counter = self._counters.get(key)
            return None if counter is None else str(counter).encode()
        expires_at, value = item
        if self._clock() >= expires_at:
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return value

    async def set(self, key: str, value: bytes, ttl_s: float) -> bool:
        size = entry_bytes(key, value)
        self._drop(key)
        if size > self.max_bytes:
            return False  # could never fit: not stored, and nothing evicted for it
        self._entries[key] = (self._clock() + ttl_s, value)
        self._bytes += size
        entries = self._entries
        while len(entries) > self.max_entries or self._bytes > self.max_bytes:
            evicted, (_, evicted_value) = entries.popitem(last=False)
            self._bytes -= entry_bytes(evicted, evicted_value)
        return True

    async def delete(self, key: str) -> bool:
        self._drop(key)
        return True

    async def advance(self, key: str, floor: int, step: int = 0) -> tuple[int | None, int] | Miss:
        before = self._counters.get(key)
        self._counters[key] = max(-1 if before is None else before, floor) + step
        return before, self._counters[key]

    async def close(self) -> None:
        self._entries.clear()
        self._bytes = 0

    def _drop(self, key: str) -> None:
        item = self._entries.pop(key, None)
        if item is not None:
            self._bytes -= entry_bytes(key, item[1])


# KEYS[1]: a counter (a generation, see generation.py). ARGV[1]: the least value it may hold after
# this call. ARGV[2]: what to add on top of the higher of the two (0 or 1).
# Returns {its value before (-1 where absent or not a number), its value after}. The counter is never
# lowered, and written only when it changes: a replica raising it to what it has seen costs a read.
_ADVANCE = """
local before = tonumber(redis.call('GET', KEYS[1])) or -1
local after = math.max(before, tonumber(ARGV[1])) + tonumber(ARGV[2])
if after ~= before then
    redis.call('SET', KEYS[1], string.format('%d', after))
end
return {before, after}
"""


class RedisBackend(RedisCommands):
    """The cache in Redis: entries and counters, read and written through the fail-open commands."""

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
        super().__init__(
            client,
            metrics=metrics,
            timeout_s=timeout_s,
            breaker=breaker,
            owns_client=owns_client,
            max_commands=max_commands,
        )
        # A batch reads keys of many slots: a cluster splits the MGET by slot (each key's entry and
        # generation still share one), where one Redis answers it in one command.
        self._mget = client.mget_nonatomic if isinstance(client, RedisCluster) else client.mget
        self._advance = client.register_script(_ADVANCE)

    async def get_many(self, keys: Sequence[str]) -> Sequence[bytes | Miss | None] | Miss:
        groups = self.nodes.by_node(keys)
        if len(groups) == 1:
            return await self._mget_on(next(iter(groups)), keys)
        # A batch over several cluster nodes: one MGET per node, all at once; a node that cannot
        # answer makes misses of its own keys only.
        replies = await asyncio.gather(
            *(self._mget_on(node, [keys[i] for i in where]) for node, where in groups.items())
        )
        values: list[bytes | Miss | None] = [Miss.UNAVAILABLE] * len(keys)
        for where, reply in zip(groups.values(), replies, strict=True):
            if not isinstance(reply, Miss):
                for i, value in zip(where, reply, strict=True):
                    values[i] = value
        return values

    async def _mget_on(self, node: Node | None, keys: Sequence[str]) -> Sequence[bytes | None] | Miss:
        # Without decode_responses, redis-py replies bytes; its stubs cannot know that.
        return await self._call_on(
            node, "MGET", lambda: cast("Awaitable[list[bytes | None]]", self._mget(keys))
        )

    async def set(self, key: str, value: bytes, ttl_s: float) -> bool:
        px = max(1, round(ttl_s * 1000))
        if isinstance(await self.call("SET", key, lambda: self.client.set(key, value, px=px)), Miss):
            self._metrics.cache_write_errors.inc()
            return False
        return True

    async def delete(self, key: str) -> bool:
        return not isinstance(await self.call("DEL", key, lambda: self.client.delete(key)), Miss)

    async def advance(self, key: str, floor: int, step: int = 0) -> tuple[int | None, int] | Miss:
        reply = await self.call("EVALSHA advance", key, lambda: self._advance([key], [floor, step]))
        if isinstance(reply, Miss):
            return reply
        before, after = (int(value) for value in cast("list[int]", reply))
        return (None if before < 0 else before), after
