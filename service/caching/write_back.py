"""Writing back what this replica computed while Redis could not store it: as soon as Redis answers
again, not at the entry's next refresh, and never over a newer entry another replica stored meanwhile.

A fill whose write failed leaves its key here; the replica's own copy (near_cache.py) holds the entry.
Every RETRY_S the keys are tried, one command at a time per Redis node, and a node's first failure
ends its turn: while Redis is down that costs nothing (its breaker refuses at once, or lets through
the one probe per cool-down that finds it back), and a refusing Redis (OOM) gets a command per turn.
A key goes when it is written, when a newer entry is found there, or when the copy is gone, expired
or invalidated.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from service.caching.backends import Miss, RedisBackend
from service.caching.generation import Generations
from service.caching.near_cache import NearCache
from service.metrics import Metrics

RETRY_S = 0.25

# KEYS[1]: an entry. ARGV[1]: the entry to write (see entry.py: a JSON line of metadata, a newline,
# the body). ARGV[2]: its remaining lifetime in milliseconds. ARGV[3]: when it was computed (its
# metadata's "at"). ARGV[4], ARGV[5]: its generation counters ("gen", "kgen").
# Keeps the entry stored there if it is as recent and of a generation at least as new; otherwise
# (absent, older, of an older generation, or not an entry at all) writes ours. Returns 1 if written,
# 0 if the stored entry was kept.
_WRITE_BACK = """
local stored = redis.call('GET', KEYS[1])
if stored then
    local line_end = string.find(stored, '\\n', 1, true)
    if line_end then
        local ok, meta = pcall(cjson.decode, string.sub(stored, 1, line_end - 1))
        if ok and type(meta) == 'table' and type(meta.at) == 'number' and type(meta.gen) == 'number'
            and type(meta.kgen) == 'number' and meta.at >= tonumber(ARGV[3])
            and meta.gen >= tonumber(ARGV[4]) and meta.kgen >= tonumber(ARGV[5]) then
            return 0
        end
    end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""


class WriteBack:
    def __init__(
        self,
        backend: RedisBackend,
        near: NearCache,
        generations: Generations,
        metrics: Metrics,
        *,
        grace_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._backend = backend
        self._near = near
        self._generations = generations
        self._metrics = metrics
        self._grace_s = grace_s
        self._clock = clock
        self._script = backend.client.register_script(_WRITE_BACK)
        self._pending: dict[str, None] = {}  # an ordered set: a key that failed goes to the back
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, key: str) -> None:
        """The entry of `key` in the near-cache could not be stored: store it once Redis answers."""
        self._pending[key] = None
        self._wake.set()
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_forever())

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer

    async def _write_forever(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                keys = list(self._pending)
                groups = self._backend.nodes.by_node(keys).values()
                await asyncio.gather(*(self._write_node([keys[i] for i in where]) for where in groups))
                if self._pending:
                    await asyncio.sleep(RETRY_S)

    async def _write_node(self, keys: list[str]) -> None:
        for key in keys:
            if isinstance(await self._write(key), Miss):
                self._pending[key] = self._pending.pop(key)  # to the back: the others get a turn
                return  # the node's breaker, or its verdict, holds for the rest of its keys
            self._pending.pop(key, None)

    async def _write(self, key: str) -> int | Miss | None:
        """1 if written, 0 if a newer entry was kept, None if there is nothing left to write."""
        near = self._near.get(key)
        if near is None or not near.generation.covers(self._generations.current(key)):
            return None  # dropped: a newer entry was read or stored, or an invalidation came
        entry = near.entry
        remaining_s = entry.predicted_at + entry.fresh_s + self._grace_s - self._clock()
        if remaining_s <= 0:
            return None
        arguments = (
            entry.encode(),
            max(1, round(remaining_s * 1000)),
            repr(entry.predicted_at),
            near.generation.model,
            near.generation.key,
        )
        written = await self._backend.call("EVALSHA write_back", key, lambda: self._script([key], arguments))
        if isinstance(written, Miss):
            return written
        (self._metrics.write_backs_written if written else self._metrics.write_backs_newer_kept).inc()
        return int(written)
