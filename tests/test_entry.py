"""Cached entries: what goes into the cache comes back byte for byte, and nothing foreign is served."""

from __future__ import annotations

import orjson
import pytest

from service.caching.entry import CachedPrediction, Generation
from tests.support.keys import pair_entry, pair_input

KEY = "predcache:v1:0123456789abcdef"
ETH_EUR = pair_input("ETH-EUR").canonical


def test_round_trip_keeps_body_bytes_and_metadata() -> None:
    entry = pair_entry(
        KEY, "ETH-EUR", 2917.5, predicted_at=1_700_000_000.25, generation=Generation(3, 1_700_000_000_000)
    )
    decoded = CachedPrediction.decode(KEY, ETH_EUR, entry.encode())
    assert decoded == entry


def test_the_metadata_carries_the_readable_input() -> None:
    """`redis-cli GET` shows which input an entry answers, as JSON."""
    raw = pair_entry(KEY, "ETH-EUR", 1.0).encode()
    meta = orjson.loads(raw.partition(b"\n")[0])
    assert meta["input"] == {"pair": "ETH-EUR"}


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not json\n{}",
        b'{"key": "predcache:v1:0123456789abcdef"}',
        b'{"key": "predcache:v1:0123456789abcdef", "input": {"pair": "ETH-EUR"}, "at": 1}\n{broken',
        b'{"key": "predcache:v1:0123456789abcdef", "input": {"pair": "ETH-EUR"}, "at": "x", "model_s": 1,'
        b' "fresh_s": 1, "refresh_s": 1, "gen": 0}\n{}',
    ],
)
def test_corrupt_values_are_misses(raw: bytes) -> None:
    assert CachedPrediction.decode(KEY, ETH_EUR, raw) is None


def test_another_keys_entry_is_a_miss() -> None:
    foreign = pair_entry("predcache:v1:fedcba9876543210", "ETH-EUR", 1.0).encode()
    assert CachedPrediction.decode(KEY, ETH_EUR, foreign) is None


def test_another_inputs_entry_under_our_key_is_a_miss() -> None:
    """Even with our key in its metadata, an entry computed for another input is never served."""
    planted = pair_entry(KEY, "BTC-EUR", 1.0).encode()
    assert CachedPrediction.decode(KEY, ETH_EUR, planted) is None


def test_a_value_over_the_size_cap_is_a_miss() -> None:
    raw = pair_entry(KEY, "ETH-EUR", 1.0).encode()
    assert CachedPrediction.decode(KEY, ETH_EUR, raw, max_bytes=len(raw)) is not None
    assert CachedPrediction.decode(KEY, ETH_EUR, raw, max_bytes=len(raw) - 1) is None


def test_an_entry_of_the_previous_format_is_a_miss() -> None:
    """Before #21 "gen" held the sum of both counters and there was no "kgen": such an entry cannot
    say which invalidations it came after, so it is recomputed once rather than trusted."""
    raw = pair_entry(KEY, "ETH-EUR", 1.0).encode()
    meta, _, body = raw.partition(b"\n")
    old = orjson.loads(meta)
    del old["kgen"]
    assert CachedPrediction.decode(KEY, ETH_EUR, orjson.dumps(old) + b"\n" + body) is None
