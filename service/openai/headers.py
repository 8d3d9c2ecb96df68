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


def items_headers(answers: list[Answer], now: float) -> dict[str, str]:
    """A list of embeddings inputs answered item by item: a HIT when every item was (STALE when
    some were stale), else a MISS saying how many items came from the cache; the oldest item's age."""
    if all(answer.outcome is Outcome.HIT for answer in answers):
        oldest = min(answers, key=lambda answer: answer.entry.predicted_at)
        return answer_headers(oldest, now)
    age = max(0, int(now - min(answer.entry.predicted_at for answer in answers)))
    cached = sum(answer.outcome is not Outcome.MISS for answer in answers)
    if cached == len(answers):
        return {"X-Cache": "STALE", "Age": str(age), "Cache-Status": "predcache; hit; fwd=stale"}
    status = f"predcache; fwd=uri-miss; detail=cached-{cached}-of-{len(answers)}"
    return {"X-Cache": "MISS", "Age": str(age), "Cache-Status": status}
