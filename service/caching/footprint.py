"""What a prediction kept in process costs in resident memory: its objects as the allocators round
them, and its slot in the table holding it. The byte bounds count this, not the length of the bodies,
so that a bound holds for the memory the process uses (checked by tests/test_footprint.py)."""

from __future__ import annotations

import sys

from service.caching.entry import ZERO, CachedPrediction

# pymalloc serves requests up to this size in 16-byte steps; malloc serves the larger ones with an
# 8-byte header in 16-byte steps, and mmap (past its threshold, 128 KiB at first) in whole pages.
_SMALL = 512
_MMAP = 128 * 1024
_PAGE = 4096
# An OrderedDict slot: the dict's entry and index, the linked node and its fast-lookup slot, at the
# sparsest the table gets (just after it grew). Measured with tracemalloc: 66 to 100 bytes a key.
ORDERED_SLOT = 112
FLOAT = 32  # a float object (24 bytes) as pymalloc allots it
INT = 32  # an int past the small ones CPython shares


def allocated(size: int) -> int:
    """Bytes the allocator takes for an object of `size` bytes."""
    if size <= _SMALL:
        return -(-size // 16) * 16
    if size < _MMAP:
        return -(-(size + 8) // 16) * 16
    return -(-(size + 16) // _PAGE) * _PAGE


def of(obj: object) -> int:
    """Bytes `obj` itself takes (not what it refers to)."""
    return allocated(sys.getsizeof(obj))


# The generation an entry was computed under is a (model, key) tuple of two counters.
GENERATION = of(ZERO) + 2 * INT
_PREDICTION = of(CachedPrediction("", b"", b"", 0.0, 0.0, 0.0, 0.0, ZERO)) + 4 * FLOAT + GENERATION


def prediction(entry: CachedPrediction) -> int:
    """A decoded entry: the object, its key, input and body, its four times and its generation."""
    return _PREDICTION + of(entry.key) + of(entry.input) + of(entry.body)
