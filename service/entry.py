"""A cached prediction and its wire format: one JSON line of metadata, a newline, the response body.

The body is stored exactly as it is served, so a hit sends bytes without re-encoding them; orjson
never writes a raw newline, so the first one always ends the metadata.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import orjson

# Larger values are not ours (or are an attack on the cache) and are treated as a miss.
MAX_ENTRY_BYTES = 4096


@dataclass(frozen=True, slots=True)
class CachedPrediction:
    key: str
    body: bytes  # the JSON response body, served as is
    predicted_at: float  # Unix time at which the model computed it
    model_duration_s: float  # how long the model took, for refreshing early enough
    fresh_s: float  # served as fresh this long after predicted_at (the TTL, jittered down)
    refresh_s: float  # from this age on, the next reader refreshes it early, in the background
    generation: int  # the cache generation it was written in; a bumped generation disowns it

    @classmethod
    def create(
        cls,
        *,
        key: str,
        pair: str,
        price: float,
        horizon_s: int,
        model_version: str,
        predicted_at: float,
        model_duration_s: float,
        fresh_s: float,
        refresh_s: float,
        generation: int,
    ) -> CachedPrediction:
        body = orjson.dumps(
            {
                "pair": pair,
                "predicted_price": price,
                "currency": pair.partition("-")[2],
                "horizon_seconds": horizon_s,
                "model_version": model_version,
                "predicted_at": datetime.fromtimestamp(predicted_at, UTC).isoformat(timespec="milliseconds"),
            }
        )
        return cls(key, body, predicted_at, model_duration_s, fresh_s, refresh_s, generation)

    def encode(self) -> bytes:
        meta = orjson.dumps(
            {
                "key": self.key,
                "at": self.predicted_at,
                "model_s": self.model_duration_s,
                "fresh_s": self.fresh_s,
                "refresh_s": self.refresh_s,
                "gen": self.generation,
            }
        )
        return meta + b"\n" + self.body

    @classmethod
    def decode(cls, key: str, pair: str, raw: bytes) -> CachedPrediction | None:
        """The entry stored under `key` for `pair`, or None when `raw` is corrupt, oversized or another's."""
        if len(raw) > MAX_ENTRY_BYTES:
            return None
        meta_end = raw.find(b"\n")
        if meta_end < 0:
            return None
        try:
            meta = orjson.loads(raw[:meta_end])
            if meta["key"] != key:
                return None
            predicted_at = float(meta["at"])
            model_duration_s = float(meta["model_s"])
            fresh_s = float(meta["fresh_s"])
            refresh_s = float(meta["refresh_s"])
            generation = int(meta["gen"])
            # Served bytes must be this pair's prediction, whatever was planted under the key.
            if orjson.loads(raw[meta_end + 1 :])["pair"] != pair:
                return None
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None
        return cls(key, raw[meta_end + 1 :], predicted_at, model_duration_s, fresh_s, refresh_s, generation)
