"""A /v1/ request's Cache-Control: `no-cache` (ask the upstream, store its answer), `no-store`
(neither read nor write the cache), `max-age=N` (an answer at most N seconds old). A directive the
gateway cannot honor is refused with 400 rather than silently ignored."""

from __future__ import annotations

import re
from dataclasses import dataclass

from service.caching.freshness import ANY_AGE, Freshness
from service.openai.errors import GatewayRefused

_SECONDS = re.compile(r"[0-9]{1,10}")
HONORED = "no-cache, no-store and max-age=N"


@dataclass(frozen=True, slots=True)
class CacheDirectives:
    freshness: Freshness = ANY_AGE
    no_store: bool = False


ANY = CacheDirectives()


def cache_directives(header: str | None) -> CacheDirectives:
    if not header:
        return ANY
    no_cache = no_store = False
    max_age_s: float | None = None
    for directive in header.lower().split(","):
        name, _, value = directive.strip().partition("=")
        name = name.strip()
        if name == "no-cache" and not value:
            no_cache = True
        elif name == "no-store" and not value:
            no_store = True
        elif name == "max-age":
            seconds = value.strip().strip('"')
            # ASCII digits only: str.isdigit() also accepts "³", which int() then refuses.
            if not _SECONDS.fullmatch(seconds):
                raise _refused(f"max-age must be a whole number of seconds, got {value!r}")
            max_age_s = float(seconds)
        elif name:
            raise _refused(f"Cache-Control {directive.strip()!r} is not one the gateway honors ({HONORED})")
    return CacheDirectives(Freshness(no_cache=no_cache, max_age_s=max_age_s), no_store=no_store)


def _refused(message: str) -> GatewayRefused:
    return GatewayRefused(400, message, param="Cache-Control", code="invalid_cache_control")
