"""The cache headers of every /v1/ answer, streams included: `X-Cache` (HIT, STALE, MISS, or BYPASS
when the cache took no part), `Age` (seconds since the upstream generated the answer) and
`Cache-Status` (RFC 9211)."""

from __future__ import annotations

from service.caching.freshness import Outcome
from service.caching.predictions import Answer

BYPASS = {"X-Cache": "BYPASS", "Age": "0", "Cache-Status": "predcache; fwd=bypass"}
REFUSED = {"X-Cache": "BYPASS", "Age": "0", "Cache-Status": "predcache; fwd=bypass; detail=refused"}
UPSTREAM_ERROR = {"X-Cache": "MISS", "Age": "0", "Cache-Status": "predcache; fwd=uri-miss; detail=error"}


def answer_headers(answer: Answer, now: float) -> dict[str, str]:
    entry = answer.entry
    age = max(0, int(now - entry.predicted_at))
    if answer.outcome is Outcome.HIT:
        ttl_left = max(0, int(entry.predicted_at + entry.fresh_s - now))
        status = f"predcache; hit; ttl={ttl_left}"
    elif answer.outcome is Outcome.STALE:
        status = "predcache; hit; fwd=stale"
    else:
        # RFC 9211: `request` when the client's own Cache-Control sent it upstream.
        status = "predcache; fwd=request" if answer.forced else "predcache; fwd=uri-miss"
        if answer.collapsed:
            status += "; collapsed"
        elif answer.stored:
            status += "; stored"
    return {"X-Cache": answer.outcome.value, "Age": str(age), "Cache-Status": status}


def live_headers(*, joined: bool, forced: bool) -> dict[str, str]:
    """A miss streamed while it is generated: whether it will be stored is not known yet."""
    status = "predcache; fwd=request" if forced else "predcache; fwd=uri-miss"
    return {"X-Cache": "MISS", "Age": "0", "Cache-Status": status + ("; collapsed" if joined else "")}
