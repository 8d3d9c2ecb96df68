"""Inputs that are any JSON object (an upstream model server's), checked by an optional JSON Schema and
keyed by their canonical JSON, in which 15 and 15.0 are one number."""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Mapping
from typing import Any

import orjson
from jsonschema import SchemaError, ValidationError, validators
from multidict import MultiMapping
from pydantic import JsonValue

from service.errors import FieldError, InvalidInput
from service.models.inputs import DIGEST_BYTES, InputCodec, ModelInput, _json_type
from service.models.json_bytes import dumps_kept

JsonObject = dict[str, JsonValue]

# Integral floats up to this size are written as integers: every one of them is exactly an int.
_EXACT_INTEGER = 2**53
# Deeper inputs are refused: every step of normalizing and validating one recurses, and Python's
# stack would give out (a 500) before orjson's own limit of 1024 levels.
MAX_DEPTH = 64
_MAX_FIELD_ERRORS = 10
_MAX_MESSAGE_CHARS = 200
_QUERY_TYPES = {"number", "integer", "boolean", "null"}


class JsonObjectCodec(InputCodec):
    """Decodes requests into JSON objects, which the schema (when there is one) must accept.

    - The canonical form is the object with its keys sorted, no whitespace, and every integral number
      written as an integer (`15.0`, `1.5e1` and `15` are one key). It is also what the upstream is
      sent, so the answer cached under a key is the answer to exactly that key's JSON.
    - A query string has no types, so `?x=15` is `{"x": "15"}`, unless the schema types `x` as a
      number, integer, boolean or null (and not also as a string): then the value is read as JSON,
      `{"x": 15}`, the same input as the JSON body `{"x": 15.0}`. Objects and arrays need a POST.
    """

    def __init__(
        self, schema: Mapping[str, Any] | None = None, *, invalid: type[InvalidInput] = InvalidInput
    ) -> None:
        super().__init__(JsonObject, invalid=invalid)
        root: Mapping[str, Any] = {"type": "object"} if schema is None else schema
        self._validator = None if schema is None else validators.validator_for(schema)(schema)
        # What /openapi.json publishes: the schema as given, its definitions where OpenAPI keeps them.
        self.schema = openapi_form(root)
        properties: Mapping[str, Any] = _resolve(root, root).get("properties", {})
        self.field_names = frozenset(properties)
        # The fields whose query-string values are read as JSON (see the class docstring).
        self._query_types = {
            name: types
            for name, subschema in properties.items()
            if isinstance(subschema, Mapping)
            and "string" not in (types := _types(_resolve(subschema, root)))
            and types & _QUERY_TYPES
        }

    def _from_query(self, query: MultiMapping[str]) -> ModelInput:
        fields: JsonObject = {}
        for name, text in query.items():
            if name in fields:
                raise self._invalid(
                    f"the {name} parameter is given more than once",
                    [FieldError(name, "given more than once")],
                )
            types = self._query_types.get(name)
            fields[name] = text if types is None else _typed(text, types)
        return self.from_object(fields)

    def from_object(self, parsed: object) -> ModelInput:
        if not isinstance(parsed, dict):
            raise self._invalid(f"the input must be a JSON object, not {_json_type(parsed)}")
        try:
            value = normalized(parsed)
        except TooDeep:
            raise self._invalid(f"the input is nested more than {MAX_DEPTH} levels deep") from None
        if self._validator is not None:
            errors = sorted(self._validator.iter_errors(value), key=lambda e: [str(p) for p in e.path])
            if errors:
                fields = [_field_error(error) for error in errors[:_MAX_FIELD_ERRORS]]
                raise self._invalid("; ".join(f"{f.field}: {f.message}" for f in fields), fields)
        canonical = self.canonical(value)
        return ModelInput(value, canonical, hashlib.blake2b(canonical, digest_size=DIGEST_BYTES).hexdigest())

    def canonical(self, value: Any) -> bytes:
        return dumps_kept(normalized(value), option=orjson.OPT_SORT_KEYS)


def check_schema(schema: object) -> str | None:
    """What is wrong with `schema` as a JSON Schema for the input, or None."""
    if not isinstance(schema, dict):
        return "a JSON Schema for the input must be a JSON object"
    try:
        validators.validator_for(schema).check_schema(schema)
    except SchemaError as exc:
        return f"not a valid JSON Schema: {exc.message}"
    return None


class TooDeep(ValueError):
    """A JSON value nested more than MAX_DEPTH levels deep."""


def normalized(value: Any, depth: int = 0) -> Any:
    """`value` with every integral float (within ±2^53) made an int: JSON has one kind of number.
    TooDeep past MAX_DEPTH levels of arrays and objects."""
    if isinstance(value, float):
        return int(value) if value.is_integer() and abs(value) <= _EXACT_INTEGER else value
    if isinstance(value, dict | list) and depth >= MAX_DEPTH:
        raise TooDeep(depth)
    if isinstance(value, dict):
        return {key: normalized(item, depth + 1) for key, item in value.items()}
    if isinstance(value, list):
        return [normalized(item, depth + 1) for item in value]
    return value


def openapi_form(schema: Mapping[str, Any]) -> dict[str, Any]:
    """The schema as an OpenAPI 3.1 component: no `$schema`/`$id`, definitions under `$defs` (which
    openapi.py moves into components/schemas) and references pointing there."""
    form = copy.deepcopy(dict(schema))
    form.pop("$schema", None)
    form.pop("$id", None)
    definitions = {**form.pop("definitions", {}), **form.pop("$defs", {})}
    if definitions:
        form["$defs"] = definitions
    return _rewrite_refs(form)  # type: ignore[no-any-return]


def _rewrite_refs(node: Any) -> Any:
    if isinstance(node, dict):
        rewritten = {key: _rewrite_refs(value) for key, value in node.items()}
        ref = rewritten.get("$ref")
        if isinstance(ref, str):
            for prefix in ("#/$defs/", "#/definitions/"):
                if ref.startswith(prefix):
                    rewritten["$ref"] = "#/components/schemas/" + ref.removeprefix(prefix)
        return rewritten
    if isinstance(node, list):
        return [_rewrite_refs(item) for item in node]
    return node


def _resolve(subschema: Mapping[str, Any], root: Mapping[str, Any]) -> Mapping[str, Any]:
    """`subschema`, or what its local `$ref` (`#/...`) points to."""
    ref = subschema.get("$ref")
    if not isinstance(ref, str) or not ref.startswith("#/"):
        return subschema
    node: Any = root
    for part in ref[2:].split("/"):
        if not isinstance(node, Mapping):
            return subschema
        node = node.get(part.replace("~1", "/").replace("~0", "~"))
    return node if isinstance(node, Mapping) else subschema


def _types(subschema: Mapping[str, Any]) -> frozenset[str]:
    declared = subschema.get("type")
    if isinstance(declared, str):
        return frozenset({declared})
    if isinstance(declared, list):
        return frozenset(t for t in declared if isinstance(t, str))
    return frozenset()


def _typed(text: str, types: frozenset[str]) -> JsonValue:
    """A query value read as JSON of one of `types`; the text as it is if it is none of them (the
    schema then says what is wrong)."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return text
    if value is None:
        return None if "null" in types else text
    if isinstance(value, bool):
        return value if "boolean" in types else text
    if isinstance(value, int | float):
        integral = isinstance(value, int) or value.is_integer()
        return value if "number" in types or ("integer" in types and integral) else text
    return text


def _field_error(error: ValidationError) -> FieldError:
    field = ".".join(str(part) for part in error.path) or "(input)"
    message = error.message
    if len(message) > _MAX_MESSAGE_CHARS:
        message = message[: _MAX_MESSAGE_CHARS - 1] + "…"
    return FieldError(field, message)
