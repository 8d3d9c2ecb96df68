"""The model-wide generation, kept in process: `DELETE /cache` bumps one counter that every read
needs, so rather than read it on every request (one hot key, in a cluster on another node than the
entry) each replica keeps its value, set by the invalidation event and re-read every second.

An invalidation therefore reaches another replica within a pub/sub message's delay, or within
`refresh_s` if that message was lost; the replica that made it sees it at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from service.caching.backends import CacheBackend, Miss

log = logging.getLogger(__name__)

DEFAULT_REFRESH_S = 1.0


class ModelGeneration:
    """The current value of one model version's generation counter, as this process last learnt it."""

    def __init__(self, cache: CacheBackend | None, key: str, *, refresh_s: float = DEFAULT_REFRESH_S) -> None:
        self.key = key
        self.value = 0
        self._cache = cache
        self._refresh_s = refresh_s
        self._observed = 0  # events seen so far: a read that one overtook must not undo it
        self._refresher: asyncio.Task[None] | None = None

    def observe(self, value: int) -> None:
        """The counter is now `value` (this replica bumped it, or another one said so)."""
        self._observed += 1
        self.value = value

    def message(self, value: int) -> str:
        """The event announcing that the counter is now `value`: `<counter key>=<value>`."""
        return f"{self.key}={value}"

    def parse(self, message: str) -> int | None:
        """The value `message` announces, or None if it is about something else."""
        name, sep, raw = message.partition("=")
        if not sep or name != self.key or not raw.isdigit():
            return None
        return int(raw)

    async def refresh(self) -> None:
        """Re-read the counter; keep the value known when the cache does not answer."""
        if self._cache is None:
            return
        observed = self._observed
        values = await self._cache.get_many((self.key,))
        if isinstance(values, Miss) or observed != self._observed:
            return
        raw = values[0]
        if isinstance(raw, Miss):
            return
        try:
            # Not max(): a Redis restarted empty starts the counter again at 0, and every replica
            # must agree on the value, or each would ignore the entries the others write.
            self.value = int(raw or 0)
        except ValueError:
            log.warning("%s holds %r, not a counter; keeping generation %d", self.key, raw, self.value)

    def start(self) -> None:
        self._refresher = asyncio.create_task(self._refresh_forever())

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self._refresh_s)
            await self.refresh()

    async def close(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
