"""The near-cache: the entries this replica has read or computed, kept in process.

For `near_ttl_s` after it was read, an entry is trusted without asking the cache, so most hits skip
the round trip and the decoding. Past that the cache is asked again, but the copy is kept for its
whole life (TTL + grace): when the cache cannot be reached, or has no entry because a store was
lost while it was down, the copy still answers by the entry's own freshness rules, so an outage
costs one model call per key per TTL rather than one per `near_ttl_s`.

Every replica drops its copy when any replica stores, deletes or invalidates the key (see events).
An epoch, bumped on every such drop, keeps a read or fill that started before the drop from putting
back what it carries. Bounded in entries and in bytes of memory (footprint.py); the oldest go first.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass

from service.caching import footprint
from service.caching.entry import ZERO, CachedPrediction, Generation


@dataclass(frozen=True, slots=True)
class NearEntry:
    entry: CachedPrediction
    generation: Generation
    until: float  # monotonic time until which it is trusted without asking the cache

    def is_trusted(self) -> bool:
        """Whether it may answer without asking the cache (later it answers only in its stead)."""
        return self.until > time.monotonic()


# What a copy costs besides its entry: its NearEntry, the `until` float and its slot in the table.
_COPY = footprint.of(NearEntry(CachedPrediction("", b"", b"", 0.0, 0.0, 0.0, 0.0, ZERO), ZERO, 0.0))
_COPY += footprint.FLOAT + footprint.ORDERED_SLOT


def copy_bytes(entry: CachedPrediction) -> int:
    """The memory a copy of `entry` takes, all included: what NEAR_CACHE_MAX_BYTES counts."""
    return _COPY + footprint.prediction(entry)


class NearCache:
    """The copies, in the order they were made. `keep_for_outages=False` drops a copy once it is no
    longer trusted: for a cache in this process, which cannot become unreachable, a copy past its
    trust would only hold the same prediction twice."""

    def __init__(
        self, *, ttl_s: float, max_entries: int, max_bytes: int, keep_for_outages: bool = True
    ) -> None:
        self._entries: OrderedDict[str, NearEntry] = OrderedDict()
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._keep_for_outages = keep_for_outages
        self._bytes = 0
        self.epoch = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def memory_bytes(self) -> int:
        """Memory the copies take (see copy_bytes), at most `max_bytes`."""
        return self._bytes

    def get(self, key: str) -> NearEntry | None:
        """The copy of `key`, whether or not it is still trusted (`until`)."""
        return self._entries.get(key)

    def remember(self, entry: CachedPrediction, generation: Generation, epoch: int) -> None:
        """Keep `entry`, unless something was forgotten since `epoch` (when it was read)."""
        if epoch != self.epoch:
            return
        size = copy_bytes(entry)
        if size > self._max_bytes:
            return
        self._drop(entry.key)
        now = time.monotonic()
        self._entries[entry.key] = NearEntry(entry, generation, now + self._ttl_s)
        self._bytes += size
        entries = self._entries
        # Insertion order, not recency: a hit then costs no bookkeeping. It is also the order of
        # `until` (one TTL for all), so the copies no longer trusted are the oldest.
        while entries and (
            len(entries) > self._max_entries
            or self._bytes > self._max_bytes
            or (not self._keep_for_outages and next(iter(entries.values())).until <= now)
        ):
            self._bytes -= copy_bytes(entries.popitem(last=False)[1].entry)

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
            self._bytes -= copy_bytes(near.entry)
