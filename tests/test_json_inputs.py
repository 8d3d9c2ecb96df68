"""JSON-object inputs: one key for every spelling of one JSON value, query strings typed only by the
schema, schema errors naming the field, and the schema in OpenAPI's form."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from multidict import MultiDict

from service.errors import InvalidInput
from service.models.json_inputs import MAX_DEPTH, JsonObjectCodec, check_schema, normalized, openapi_form

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "count": {"type": "integer"},
        "price": {"$ref": "#/definitions/Price"},
        "flag": {"type": ["boolean", "null"]},
        "code": {"type": ["string", "integer"]},
        "name": {"type": "string"},
    },
    "definitions": {"Price": {"type": "number", "exclusiveMinimum": 0}},
}


def test_spellings_of_one_json_value_are_one_key() -> None:
    """Key order, whitespace and integral numbers written as floats or exponents do not matter."""
    codec = JsonObjectCodec()
    spellings = [
        b'{"a": 15, "b": {"y": [1, 2.5], "x": null}}',
        b'{"b":{"x":null,"y":[1.0,2.50]},"a":15.0}',
        b'{ "a" : 1.5e1 , "b" : { "y" : [ 1e0 , 25e-1 ] , "x" : null } }',
    ]
    inputs = [codec.from_json(body) for body in spellings]
    assert {i.canonical for i in inputs} == {b'{"a":15,"b":{"x":null,"y":[1,2.5]}}'}
    assert len({i.digest for i in inputs}) == 1


def test_different_values_are_different_keys() -> None:
    codec = JsonObjectCodec()
    digests = {
        codec.from_object(value).digest
        for value in [{"a": 15}, {"a": 15.5}, {"a": "15"}, {"a": [15]}, {"a": True}, {"a": 1}, {}]
    }
    assert len(digests) == 7


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_a_number_normalizes_to_the_same_value(number: float) -> None:
    value = normalized(number)
    assert value == number
    assert isinstance(value, int) == (number.is_integer() and abs(number) <= 2**53)


def test_without_a_schema_query_values_are_strings() -> None:
    codec = JsonObjectCodec()
    model_input = codec.from_query(MultiDict({"count": "15", "flag": "true", "x": "null"}))
    assert model_input.value == {"count": "15", "flag": "true", "x": "null"}


def test_with_a_schema_query_values_take_the_fields_json_type() -> None:
    codec = JsonObjectCodec(SCHEMA)
    query = MultiDict({"count": "15.0", "price": "2.5", "flag": "null", "code": "007", "name": "15"})
    assert codec.from_query(query).value == {
        "count": 15,
        "price": 2.5,
        "flag": None,
        "code": "007",  # a string is allowed: the text stays text
        "name": "15",
    }
    assert codec.from_query(MultiDict({"count": "15"})).digest == codec.from_object({"count": 15.0}).digest


@pytest.mark.parametrize(
    ("query", "field"),
    [({"count": "1.5"}, "count"), ({"price": "cheap"}, "price"), ({"price": "0"}, "price")],
)
def test_a_query_value_the_schema_refuses_names_its_field(query: dict[str, str], field: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        JsonObjectCodec(SCHEMA).from_query(MultiDict(query))
    assert [f.field for f in refused.value.fields] == [field]


def test_a_repeated_query_parameter_is_refused() -> None:
    with pytest.raises(InvalidInput, match="more than once"):
        JsonObjectCodec().from_query(MultiDict([("a", "1"), ("a", "2")]))


@pytest.mark.parametrize("body", [b"[1]", b'"a"', b"1", b"null", b"{", b"\xff"])
def test_a_body_that_is_not_a_json_object_is_refused(body: bytes) -> None:
    with pytest.raises(InvalidInput):
        JsonObjectCodec().from_json(body)


def test_the_openapi_form_moves_definitions_and_their_references() -> None:
    form = openapi_form({"$schema": "https://json-schema.org/draft-07/schema#", "$id": "x", **SCHEMA})
    assert form["properties"]["price"] == {"$ref": "#/components/schemas/Price"}
    assert form["$defs"] == {"Price": {"type": "number", "exclusiveMinimum": 0}}
    assert not {"$schema", "$id", "definitions"} & set(form)
    assert JsonObjectCodec().schema == {"type": "object"}


def test_a_schema_is_checked() -> None:
    assert check_schema(SCHEMA) is None
    assert check_schema({"type": 3}) is not None
    assert check_schema([]) is not None


def test_an_input_nested_too_deep_is_refused_not_a_crash() -> None:
    """Normalizing and validating recurse per level: past MAX_DEPTH the input is a 400, not a 500."""
    codec = JsonObjectCodec(SCHEMA)
    fits = b'{"a": ' + b"[" * (MAX_DEPTH - 1) + b"]" * (MAX_DEPTH - 1) + b"}"
    assert codec.from_json(fits).canonical.count(b"[") == MAX_DEPTH - 1
    for depth in (MAX_DEPTH, 500, 1000):
        with pytest.raises(InvalidInput, match="nested more than"):
            codec.from_json(b'{"a": ' + b"[" * depth + b"]" * depth + b"}")
