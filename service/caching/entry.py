"""A cached prediction and its wire format: one JSON line of metadata, a newline, the response body.

The body is stored exactly as it is served, so a hit sends bytes without re-encoding them; orjson
never writes a raw newline, so the first one always ends the metadata. The metadata carries the
input in canonical form: an entry is served only for the input it was computed for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import orjson

DEFAULT_MAX_ENTRY_BYTES = 1024 * 1024


class Generation(NamedTuple):
    """The model-wide counter and the key's own counter an entry was computed under."""

    model: int = 0
    key: int = 0

    def covers(self, known: Generation) -> bool:
        """Whether an entry of this generation may be served to a reader who knows `known`: no
        invalidation the reader knows of came after it."""
        return self.model >= known.model and self.key >= known.key

    def newest(self, other: Generation) -> Generation:
        return Generation(max(self.model, other.model), max(self.key, other.key))


ZERO = Generation()


@dataclass(frozen=True, slots=True)
class CachedPrediction:
    key: str
    input: bytes  # the canonical JSON of the input it answers
    body: bytes  # the JSON response body, served as is
    predicted_at: float  # Unix time at which the model computed it
    model_duration_s: float  # how long the model took, for refreshing early enough
    fresh_s: float  # served as fresh this long after predicted_at (the TTL, jittered down)
    refresh_s: float  # from this age on, the next reader refreshes it early, in the background
    generation: Generation  # the counters it was computed under; a bump of either disowns it

    def encode(self) -> bytes:
        meta = orjson.dumps(
            {
                "key": self.key,
                # Embedded as JSON, not as a string of JSON, so that `redis-cli GET` reads well.
                "input": orjson.Fragment(self.input),
                "at": self.predicted_at,
                "model_s": self.model_duration_s,
                "fresh_s": self.fresh_s,
                "refresh_s": self.refresh_s,
                "gen": self.generation.model,
                "kgen": self.generation.key,
            }
        )
        return meta + b"\n" + self.body

    @classmethod
    def decode(
        cls, key: str, canonical_input: bytes, raw: bytes, *, max_bytes: int = DEFAULT_MAX_ENTRY_BYTES
    ) -> CachedPrediction | None:
        """The entry stored under `key` for `canonical_input`, or None when `raw` is corrupt, oversized
        or another input's (a digest collision, or a value planted under our key)."""
        if len(raw) > max_bytes:
            return None
        meta_end = raw.find(b"\n")
        if meta_end < 0:
            return None
        try:
            meta = orjson.loads(raw[:meta_end])
            if meta["key"] != key:
                return None
            if orjson.dumps(meta["input"], option=orjson.OPT_SORT_KEYS) != canonical_input:
                return None
            predicted_at = float(meta["at"])
            model_duration_s = float(meta["model_s"])
            fresh_s = float(meta["fresh_s"])
            refresh_s = float(meta["refresh_s"])
            generation = Generation(int(meta["gen"]), int(meta["kgen"]))
            generation = generation if any(generation) else ZERO  # one object for the usual case
        except (orjson.JSONDecodeError, orjson.JSONEncodeError, KeyError, TypeError, ValueError):
            return None
        body = raw[meta_end + 1 :]
        return cls(key, canonical_input, body, predicted_at, model_duration_s, fresh_s, refresh_s, generation)
