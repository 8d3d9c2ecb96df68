"""Pairs: the spellings clients use map to one canonical form; anything else is a 400."""

from __future__ import annotations

import pytest

from service.errors import InvalidPair
from service.models.pair import parse_pair


@pytest.mark.parametrize("raw", ["ETH-EUR", "eth-eur", "ETH/EUR", "eth/Eur"])
def test_spellings_of_one_pair_are_the_same_pair(raw: str) -> None:
    assert parse_pair(raw) == "ETH-EUR"


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "ETH",
        "ETH-",
        "-EUR",
        "ETH_EUR",
        "ETH EUR",
        "ETH-EUR\x00",
        "ETH\u2010EUR",  # a Unicode hyphen
        "ETH-EUR\r\nSET x y",
        "*",
        "FLUSHALL",
        "ETH-EUR-GBP",
        "A" * 10_000,
        "ÉTH-EUR",
        "ETH-EUR\n",
    ],
)
def test_malformed_pairs_are_rejected(raw: str) -> None:
    with pytest.raises(InvalidPair):
        parse_pair(raw)
