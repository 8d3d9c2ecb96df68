"""The near-cache: the entries this replica has read or computed, kept in process.

For `near_ttl_s` after it was read, an entry is trusted without asking the cache, so most hits skip
the round trip and the decoding. Past that the cache is asked again, but the copy is kept for its
whole life (TTL + grace): when the cache cannot be reached, or has no entry because a store was
lost while it was down, the copy still answers by the entry's own freshness rules, so an outage
costs one model call per key per TTL rather than one per `near_ttl_s`.

Every replica drops its copy when any replica stores, deletes or invalidates the key (see events).
An epoch, bumped on every such drop, keeps a read or fill that started before the drop from putting
back what it carries. Bounded in entries and in bytes; the oldest copies go first.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass

from service.caching.entry import CachedPrediction
from service.caching.generation import Generation


@dataclass(frozen=True, slots=True)
class NearEntry:
    entry: CachedPrediction
    generation: Generation
    until: float  # monotonic time until which it is trusted without asking the cache
    size: int  # bytes it holds, for the bound

    def is_trusted(self) -> bool:
        """Whether it may answer without asking the cache (later it answers only in its stead)."""
        return self.until > time.monotonic()


class NearCache:
    def __init__(self, *, ttl_s: float, max_entries: int, max_bytes: int) -> None:
        self._entries: OrderedDict[str, NearEntry] = OrderedDict()
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._bytes = 0
        self.epoch = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> NearEntry | None:
        """The copy of `key`, whether or not it is still trusted (`until`)."""
        return self._entries.get(key)

    def remember(self, entry: CachedPrediction, generation: Generation, epoch: int) -> None:
        """Keep `entry`, unless something was forgotten since `epoch` (when it was read)."""
        if epoch != self.epoch:
            return
        size = len(entry.body) + len(entry.input) + len(entry.key)
        if size > self._max_bytes:
            return
        self._drop(entry.key)
        self._entries[entry.key] = NearEntry(entry, generation, time.monotonic() + self._ttl_s, size)
        self._bytes += size
        while len(self._entries) > self._max_entries or self._bytes > self._max_bytes:
            # Insertion order, not recency: a hit then costs no bookkeeping.
            self._bytes -= self._entries.popitem(last=False)[1].size

    def forget(self, key: str) -> None:
        self.epoch += 1
        self._drop(key)

    def forget_all(self) -> None:
        self.epoch += 1
        self._entries.clear()
        self._bytes = 0

    def _drop(self, key: str) -> None:
        near = self._entries.pop(key, None)
        if near is not None:
            self._bytes -= near.size
