"""Freshness: when a cached prediction is a hit, stale, or must be recomputed, and when to refresh early.

An entry computed at `t` with TTL `fresh_s` (jittered down from the TTL) and grace `g`:
  [t, t + fresh_s)                HIT; from t + refresh_s on, the next reader refreshes it early
  [t + fresh_s, t + fresh_s + g)  STALE: served at once while one background refresh recomputes it
  from t + fresh_s + g            gone (Redis expired it): a MISS waits for the model
So no response is ever older than TTL + grace. A client may ask for less with Cache-Control.
"""

from __future__ import annotations

import enum
import math
import random
from dataclasses import dataclass

from service.caching.entry import CachedPrediction

# TTLs are shortened by up to this fraction, so keys warmed together do not expire together.
TTL_JITTER = 0.1


class Outcome(enum.Enum):
    HIT = "HIT"
    STALE = "STALE"
    MISS = "MISS"


@dataclass(frozen=True, slots=True)
class Freshness:
    """What the client accepts, from its Cache-Control request header."""

    no_cache: bool = False  # a fresh prediction, never a cached one
    max_age_s: float | None = None  # only a prediction at most this old

    def refuses(self, age_s: float) -> bool:
        """Whether the client's own Cache-Control rules out an entry of this age."""
        return self.no_cache or (self.max_age_s is not None and age_s > self.max_age_s)

    def newer_than(self, now: float, cached_at: float) -> float:
        """The oldest prediction time the client accepts, given the cached one it was offered."""
        if self.no_cache:
            return now  # only a prediction computed after this request arrived
        if self.max_age_s is not None:
            return max(cached_at, now - self.max_age_s)
        return cached_at


ANY_AGE = Freshness()


def classify(entry: CachedPrediction, age_s: float, grace_s: float, freshness: Freshness) -> Outcome:
    """HIT or STALE if `entry` may be served at `age_s`, MISS if it must be recomputed first."""
    if freshness.refuses(age_s):
        return Outcome.MISS
    if age_s < entry.fresh_s:
        return Outcome.HIT
    # A client that bounds the age gets no stale answer: it asked for at most max-age.
    if age_s < entry.fresh_s + grace_s and freshness.max_age_s is None:
        return Outcome.STALE
    return Outcome.MISS


class Lifetimes:
    """The freshness of a new entry: its jittered TTL and the age from which it refreshes early."""

    def __init__(self, ttl_s: float, xfetch_beta: float, rng: random.Random | None = None) -> None:
        self.ttl_s = ttl_s
        self._xfetch_beta = xfetch_beta
        self._random = rng or random.Random()

    def fresh_s(self) -> float:
        return self.ttl_s * (1.0 - TTL_JITTER * self._random.random())

    def early_refresh_age_s(self, fresh_s: float, model_duration_s: float) -> float:
        """XFetch (Vattani, Chierichetti, Lowenstein, VLDB 2015): refresh once
        `now - delta * beta * ln(random()) >= expiry`, delta being the model's time. The random number
        is drawn once per entry rather than once per read, so how early a key refreshes does not grow
        with its read rate (per-read draws refresh a busy key almost as soon as it is stored)."""
        if self._xfetch_beta <= 0:
            return fresh_s  # never: past fresh_s an entry is stale, not early
        # 1 - random() lies in (0, 1], so the logarithm is defined.
        earlier_s = -model_duration_s * self._xfetch_beta * math.log(1.0 - self._random.random())
        return max(0.0, fresh_s - earlier_s)
