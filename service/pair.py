"""Currency pairs as clients write them (`eth-eur`, `ETH/EUR`) and the one canonical form (`ETH-EUR`)."""

from __future__ import annotations

import re

from service.errors import InvalidPair

MAX_PAIR_LENGTH = 21
# ASCII letters and digits only: a Unicode hyphen, NUL, CRLF or a space never makes a valid pair.
_PAIR = re.compile(r"([A-Za-z0-9]{2,10})[-/]([A-Za-z0-9]{2,10})")


def parse_pair(raw: str) -> str:
    """Return the canonical `BASE-QUOTE` form of `raw`, or raise InvalidPair saying what is wrong."""
    if not raw:
        raise InvalidPair("the pair parameter is empty; expected e.g. pair=ETH-EUR")
    if len(raw) > MAX_PAIR_LENGTH:
        raise InvalidPair(f"the pair parameter is longer than {MAX_PAIR_LENGTH} characters")
    match = _PAIR.fullmatch(raw)
    if match is None:
        raise InvalidPair("the pair must be BASE-QUOTE (letters and digits, e.g. ETH-EUR or eth/eur)")
    return f"{match[1].upper()}-{match[2].upper()}"
