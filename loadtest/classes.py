"""Response classes: the class (HIT, STALE, MISS, collapsed, ..., error) a response or batch item falls in.

Pure: decided from the cache headers or a batch body, no I/O.
"""

from __future__ import annotations

import orjson

# Every class a response can fall in, in report order. The set is closed so that a server sending
# arbitrary X-Cache values cannot make the recorder allocate a histogram per value.
CLASSES: tuple[str, ...] = ("HIT", "STALE", "MISS", "collapsed", "other", "none", "error")
HIT_CLASSES = frozenset({"HIT", "STALE"})
ERROR_CLASS = "error"

_X_CACHE_CLASSES = {"HIT": "HIT", "MISS": "MISS", "STALE": "STALE"}
# A batch result's "cache" member, as the single endpoint's headers would classify it.
_BATCH_CACHE_CLASSES = {"HIT": "HIT", "STALE": "STALE", "MISS": "MISS", "collapsed": "collapsed"}

# One item of a batch response: (status, class, error kind or None).
BatchItem = tuple[int, str, str | None]


def classify(x_cache: str | None, cache_status: str | None) -> str:
    """The class of a successful response from its `X-Cache` and `Cache-Status` (RFC 9211) headers."""
    if cache_status is not None and "collapsed" in cache_status:
        return "collapsed"
    if x_cache is not None:
        return _X_CACHE_CLASSES.get(x_cache.strip().upper(), "other")
    if cache_status is not None:
        params = {part.strip().lower() for part in cache_status.split(";")}
        if "fwd=stale" in params:
            return "STALE"
        if "hit" in params:
            return "HIT"
        if any(param.startswith("fwd=") for param in params):
            return "MISS"
        return "other"
    return "none"


def classify_batch(status: int, body: bytes | None, size: int) -> list[BatchItem]:
    """The outcome of each of the `size` items of a `POST /predict/batch` answered with `status`.

    A 200 body is `{"results": [...]}` in request order, each `{"status": 200, "cache": ...}` or
    `{"status": 404|503|504, "error": ...}`; an item's error kind is `HTTP <its status>`, as for a
    single request. A batch that failed as a whole (any other status), or a body that is not that
    shape for `size` items, makes every item an error of that kind.
    """
    if status != 200:
        return [(status, ERROR_CLASS, f"HTTP {status}")] * size
    try:
        results = orjson.loads(body or b"")["results"]
    except (orjson.JSONDecodeError, TypeError, KeyError):
        results = None
    if not isinstance(results, list) or len(results) != size:
        return [(status, ERROR_CLASS, "bad batch response")] * size
    items: list[BatchItem] = []
    for result in results:
        item_status = result.get("status") if isinstance(result, dict) else None
        if not isinstance(item_status, int) or isinstance(item_status, bool):
            items.append((status, ERROR_CLASS, "bad batch response"))
        elif item_status >= 400:
            items.append((item_status, ERROR_CLASS, f"HTTP {item_status}"))
        else:
            cache = result.get("cache")
            name = _BATCH_CACHE_CLASSES.get(cache, "other") if isinstance(cache, str) else "none"
            items.append((item_status, name, None))
    return items
