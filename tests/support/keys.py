"""Cache keys and entries as the service makes them for a pair-only model, for tests that plant or
inspect values in Redis."""

from __future__ import annotations

import time

import orjson

from service.caching.entry import ZERO, CachedPrediction, Generation
from service.models.contract import PairQuery
from service.models.inputs import InputCodec, ModelInput
from service.redis import keyspace

_PAIRS = InputCodec(PairQuery)


def pair_input(pair: str) -> ModelInput:
    return _PAIRS.from_object({"pair": pair})


def pair_key(version: str, pair: str) -> str:
    return keyspace.entry_key(version, pair_input(pair).digest)


def pair_entry(
    key: str,
    pair: str,
    price: float,
    *,
    predicted_at: float | None = None,
    generation: Generation = ZERO,
) -> CachedPrediction:
    """A well-formed entry for `pair` under `key`, fresh for a minute."""
    body = orjson.dumps(
        {
            "pair": pair,
            "predicted_price": price,
            "currency": pair.partition("-")[2],
            "horizon_seconds": 300,
            "model_version": "planted",
            "predicted_at": "2026-11-25T00:00:00.000+00:00",
        }
    )
    return CachedPrediction(
        key=key,
        input=pair_input(pair).canonical,
        body=body,
        predicted_at=time.time() if predicted_at is None else predicted_at,
        model_duration_s=0.0,
        fresh_s=60.0,
        refresh_s=60.0,
        generation=generation,
    )
