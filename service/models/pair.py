"""Currency pairs as clients write them (`eth-eur`, `ETH/EUR`) and the one canonical form (`ETH-EUR`).

`Pair` is the annotated type a model's input declares: pydantic normalizes every spelling to the
canonical one, so all of them share one cache key.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BeforeValidator, WithJsonSchema

from service.errors import InvalidPair

MAX_PAIR_LENGTH = 21
# ASCII letters and digits only: a Unicode hyphen, NUL, CRLF or a space never makes a valid pair.
_PAIR = re.compile(r"([A-Za-z0-9]{2,10})[-/]([A-Za-z0-9]{2,10})")
# The same rule, as the OpenAPI schema states it; the tests check the two agree.
PAIR_PATTERN = r"^[A-Za-z0-9]{2,10}[-/][A-Za-z0-9]{2,10}$"


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


def _validate_pair(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError("the pair must be a string such as ETH-EUR")
    try:
        return parse_pair(value)
    except InvalidPair as exc:
        raise ValueError(exc.message) from None


# The schema is what clients may send (any spelling); the validator makes it canonical.
Pair = Annotated[
    str,
    BeforeValidator(_validate_pair),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": PAIR_PATTERN,
            "minLength": 5,
            "maxLength": MAX_PAIR_LENGTH,
            "description": "BASE-QUOTE or BASE/QUOTE, any case (normalized to BASE-QUOTE)",
            "examples": ["ETH-EUR"],
        }
    ),
]
