"""Cached entries: what goes into the cache comes back byte for byte, and nothing foreign is served."""

from __future__ import annotations

import orjson
import pytest

from service.entry import MAX_ENTRY_BYTES, CachedPrediction

KEY = "predcache:v1:ETH-EUR"


def make_entry(key: str = KEY, pair: str = "ETH-EUR") -> CachedPrediction:
    return CachedPrediction.create(
        key=key,
        pair=pair,
        price=2917.5,
        horizon_s=300,
        model_version="v1",
        predicted_at=1_700_000_000.25,
        model_duration_s=0.8,
        fresh_s=4.5,
        refresh_s=4.1,
        generation=3,
    )


def test_round_trip_keeps_body_bytes_and_metadata() -> None:
    entry = make_entry()
    decoded = CachedPrediction.decode(KEY, "ETH-EUR", entry.encode())
    assert decoded == entry
    body = orjson.loads(entry.body)
    assert body == {
        "pair": "ETH-EUR",
        "predicted_price": 2917.5,
        "currency": "EUR",
        "horizon_seconds": 300,
        "model_version": "v1",
        "predicted_at": "2023-11-14T22:13:20.250+00:00",
    }


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not json at all",
        b"\x80\x81\x82",
        b'{"key": "predcache:v1:ETH-EUR"}',
        b'{"key": "predcache:v1:ETH-EUR", "at": 1, "model_s": 1}\n{broken',
        b'{"key": "predcache:v1:ETH-EUR", "at": "x", "model_s": 1}\n{"pair": "ETH-EUR"}',
        b'[1, 2]\n{"pair": "ETH-EUR"}',
    ],
)
def test_corrupt_values_are_misses(raw: bytes) -> None:
    assert CachedPrediction.decode(KEY, "ETH-EUR", raw) is None


def test_another_keys_value_is_a_miss() -> None:
    foreign = make_entry(key="predcache:v1:BTC-EUR", pair="BTC-EUR").encode()
    assert CachedPrediction.decode(KEY, "ETH-EUR", foreign) is None


def test_another_pairs_body_under_our_key_is_a_miss() -> None:
    """Even with our key in its metadata, a body for another pair is never served."""
    planted = make_entry(key=KEY, pair="BTC-EUR").encode()
    assert CachedPrediction.decode(KEY, "ETH-EUR", planted) is None


def test_oversized_value_is_a_miss() -> None:
    entry = make_entry()
    padded = entry.encode() + b" " * MAX_ENTRY_BYTES
    assert CachedPrediction.decode(KEY, "ETH-EUR", padded) is None
