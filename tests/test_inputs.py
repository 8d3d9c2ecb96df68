"""Canonical keys: every spelling of one input is one key, and different inputs never share one."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from multidict import MultiDict

from examples.price_forecaster import ForecastQuery
from service.errors import InvalidInput
from service.models.inputs import MEMO_ENTRIES, MEMO_MAX_RAW_BYTES, InputCodec

CODEC = InputCodec(ForecastQuery)

_symbol = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=2, max_size=10)
inputs = st.tuples(_symbol, _symbol, st.integers(min_value=1, max_value=60))


@st.composite
def spellings(draw: st.DrawFn, logical: tuple[str, str, int]) -> tuple[str, object]:
    """One way a client may write the input: GET or POST, any case, `-` or `/`, any field order,
    the horizon as an int, a float or a string, and the default horizon given or left out."""
    base, quote, horizon = logical
    pair = draw(st.sampled_from([base, base.lower()])) + draw(st.sampled_from("-/"))
    pair += draw(st.sampled_from([quote, quote.lower()]))
    fields: dict[str, object] = {"pair": pair}
    if horizon != 5 or draw(st.booleans()):
        fields["horizon_minutes"] = draw(st.sampled_from([horizon, float(horizon), str(horizon)]))
    if draw(st.booleans()):
        fields = dict(reversed(fields.items()))
    if draw(st.booleans()):
        # A query string spells every value as text (and "15.0" is no int there).
        return "get", {name: str(horizon) if name == "horizon_minutes" else pair for name in fields}
    indent = draw(st.sampled_from([0, orjson.OPT_INDENT_2]))
    return "post", orjson.dumps(fields, option=indent)


def digest(spelling: tuple[str, object]) -> str:
    method, payload = spelling
    if method == "get":
        assert isinstance(payload, dict)
        return CODEC.from_query(MultiDict(payload)).digest
    assert isinstance(payload, bytes)
    return CODEC.from_json(payload).digest


@given(data=st.data(), logical=inputs)
def test_every_spelling_of_one_input_is_one_key(data: st.DataObject, logical: tuple[str, str, int]) -> None:
    first, second = data.draw(spellings(logical)), data.draw(spellings(logical))
    assert digest(first) == digest(second), (first, second)


@given(data=st.data(), one=inputs, other=inputs)
def test_different_inputs_never_share_a_key(
    data: st.DataObject, one: tuple[str, str, int], other: tuple[str, str, int]
) -> None:
    if one == other:
        return
    assert digest(data.draw(spellings(one))) != digest(data.draw(spellings(other)))


def test_the_canonical_form_is_sorted_compact_json_with_defaults() -> None:
    decoded = CODEC.from_json(b'{ "pair" : "eth/eur" }')
    assert decoded.canonical == b'{"horizon_minutes":5,"pair":"ETH-EUR"}'
    assert str(decoded) == '{"horizon_minutes":5,"pair":"ETH-EUR"}'
    assert len(decoded.digest) == 32


@pytest.mark.parametrize(
    "query",
    [
        [("pair", "BTC-USD"), ("pair", "ETH-USD")],
        [("pair", "BTC-USD"), ("horizon", "5")],
        [("pair", "BTC-USD"), ("horizon_minutes", "5.5")],
    ],
)
def test_a_repeated_unknown_or_invalid_parameter_is_refused(query: list[tuple[str, str]]) -> None:
    with pytest.raises(InvalidInput) as refused:
        CODEC.from_query(MultiDict(query))
    assert refused.value.fields


def test_remembered_query_strings_give_their_own_input_and_stay_bounded() -> None:
    codec = InputCodec(ForecastQuery)
    for horizon in range(1, 61):
        raw = f"pair=BTC-USD&horizon_minutes={horizon}"
        codec.from_query(MultiDict([("pair", "BTC-USD"), ("horizon_minutes", str(horizon))]), raw=raw)
    for horizon in range(1, 61):
        remembered = codec.recent(f"pair=BTC-USD&horizon_minutes={horizon}")
        assert remembered is not None
        assert remembered.value.horizon_minutes == horizon
    assert codec.recent("pair=ETH-USD") is None
    for i in range(MEMO_ENTRIES + 10):
        codec.from_query(MultiDict([("pair", "BTC-USD")]), raw=f"pair=BTC-USD&n={i}")
    assert len(codec._recent) <= MEMO_ENTRIES


def test_remembered_bodies_give_their_own_input_and_only_small_ones_are_kept() -> None:
    codec = InputCodec(ForecastQuery)
    bodies = [b'{"pair":"BTC-USD","horizon_minutes":%d}' % h for h in range(1, 61)]
    for body in bodies:
        codec.from_json(body)
    for horizon, body in enumerate(bodies, start=1):
        remembered = codec.recent(body)
        assert remembered is not None
        assert remembered.value.horizon_minutes == horizon
    # A query string never answers for a body of the same text, nor the other way round.
    assert codec.recent(bodies[0].decode()) is None
    padded = b'{"pair":"BTC-USD"' + b" " * MEMO_MAX_RAW_BYTES + b"}"
    assert codec.from_json(padded).value.pair == "BTC-USD"
    assert codec.recent(padded) is None
