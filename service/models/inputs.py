"""From a request to the model's validated input, its canonical form and its cache key.

The same logical input gives the same key whatever its spelling: the input is validated by the
model's own type (which converts `15.0` to an int field's `15`, fills defaults, normalizes a `Pair`),
dumped to JSON with sorted keys and no whitespace, and digested.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from multidict import MultiMapping
from pydantic import TypeAdapter, ValidationError
from pydantic_core import ErrorDetails

from service.errors import FieldError, InvalidInput, InvalidItem
from service.models.json_bytes import dumps_kept

# Long enough that a collision never happens by chance (and the entry's stored input is checked
# anyway); short enough to keep Redis keys small.
DIGEST_BYTES = 16
_LABEL_CHARS = 120
# Requests remembered by their raw query string or JSON body (see InputCodec.recent): only those up
# to the size of an input worth remembering, at most MEMO_ENTRIES of them and MEMO_MAX_BYTES of memory
# (as _memo_bytes counts it); past either bound the memo starts again.
MEMO_ENTRIES = 4096
MEMO_MAX_RAW_BYTES = 1024
MEMO_MAX_BYTES = 8 * 1024 * 1024
# A remembered input besides its raw text and canonical form: the ModelInput, its digest, the dict's
# slot and the validated value's own objects (the value's fields are counted as its canonical form
# again). Measured with tracemalloc for the demo's and the benchmarks' inputs: 400 to 500 bytes.
_MEMO_ENTRY_BYTES = 640


def _memo_bytes(raw: str | bytes, model_input: ModelInput) -> int:
    return sys.getsizeof(raw) + 2 * sys.getsizeof(model_input.canonical) + _MEMO_ENTRY_BYTES


@dataclass(frozen=True, slots=True)
class ModelInput:
    """A validated input of the model, with what the cache needs to know of it."""

    value: Any  # an instance of the model's input type
    canonical: bytes  # sorted-key JSON of the validated value: the cache entry says which input it is
    digest: str  # hex digest of `canonical`: the variable part of the cache key

    def __str__(self) -> str:
        text = self.canonical.decode()
        return text if len(text) <= _LABEL_CHARS else text[: _LABEL_CHARS - 1] + "…"


class InputCodec:
    """Decodes query strings and JSON bodies into `ModelInput`s of one input type."""

    def __init__(self, input_type: Any, *, invalid: type[InvalidInput] = InvalidInput) -> None:
        self.adapter: TypeAdapter[Any] = TypeAdapter(input_type)
        self.schema = self.adapter.json_schema(ref_template="#/components/schemas/{model}")
        self.field_names = frozenset(_top_level(self.schema).get("properties", {}))
        self._invalid = invalid
        # Raw query string (str) or JSON body (bytes) -> its input. The same text always gives the
        # same input, so a hit can never be another input's; a str never equals a bytes.
        self._recent: dict[str | bytes, ModelInput] = {}
        self._recent_bytes = 0

    def recent(self, raw: str | bytes) -> ModelInput | None:
        """The input of a recent request with exactly this query string or JSON body: most requests
        repeat one, and validating, dumping and digesting it again would cost more than the hit."""
        return self._recent.get(raw)

    def _remember(self, raw: str | bytes, model_input: ModelInput) -> None:
        if len(raw) > MEMO_MAX_RAW_BYTES:
            return  # a long query or body is rarely repeated, and would cost the memo its own size
        size = _memo_bytes(raw, model_input)
        if len(self._recent) >= MEMO_ENTRIES or self._recent_bytes + size > MEMO_MAX_BYTES:
            self._recent.clear()  # bounded; the next requests refill it
            self._recent_bytes = 0
        self._recent[raw] = model_input
        self._recent_bytes += size

    def from_query(self, query: MultiMapping[str], *, raw: str | None = None) -> ModelInput:
        """`?field=value&...`: each parameter once, converted by the field's type; remembered under
        the `raw` query string it was parsed from, if given and short (see `recent`)."""
        model_input = self._from_query(query)
        if raw is not None:
            self._remember(raw, model_input)
        return model_input

    def _from_query(self, query: MultiMapping[str]) -> ModelInput:
        fields: dict[str, str] = {}
        for name, value in query.items():
            if name in fields:
                raise self._invalid(
                    f"the {name} parameter is given more than once",
                    [FieldError(name, "given more than once")],
                )
            fields[name] = value
        self._refuse_unknown(fields)
        return self._validated(lambda: self.adapter.validate_strings(fields))

    def from_json(self, body: bytes) -> ModelInput:
        """A JSON object whose members are the input's fields; remembered under the body when it is
        small (see `recent`)."""
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise self._invalid(f"the body is not JSON: {exc}") from None
        model_input = self.from_object(parsed)
        self._remember(body, model_input)
        return model_input

    def from_object(self, parsed: object) -> ModelInput:
        """An already parsed JSON value (an item of a batch, say)."""
        if not isinstance(parsed, dict):
            raise self._invalid(f"the input must be a JSON object, not {_json_type(parsed)}")
        self._refuse_unknown(parsed)
        return self._validated(lambda: self.adapter.validate_python(parsed))

    def from_batch(self, body: bytes, *, max_items: int) -> list[ModelInput]:
        """`{"inputs": [input, ...]}`: every input valid, or InvalidInput listing the bad ones."""
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise self._invalid(f"the body is not JSON: {exc}") from None
        raw = parsed.get("inputs") if isinstance(parsed, dict) and parsed.keys() == {"inputs"} else None
        if not isinstance(raw, list):
            raise self._invalid('the body must be {"inputs": [input, ...]}')
        if not 1 <= len(raw) <= max_items:
            raise self._invalid(f"a batch has 1 to {max_items} inputs, not {len(raw)}")
        inputs, bad = [], []
        for index, item in enumerate(raw):
            try:
                inputs.append(self.from_object(item))
            except InvalidInput as exc:
                bad.append(InvalidItem(index, exc.message, exc.fields))
        if bad:
            raise self._invalid(
                f"{len(bad)} of {len(raw)} inputs are invalid; nothing was computed", items=bad
            )
        return inputs

    def canonical(self, value: Any) -> bytes:
        return dumps_kept(self.adapter.dump_python(value, mode="json"), option=orjson.OPT_SORT_KEYS)

    def _refuse_unknown(self, fields: Mapping[str, object]) -> None:
        # Refused even where the input type would ignore them: an ignored field would still tell
        # the client it mattered, and a type that kept it would split one input over many keys.
        unknown = sorted(name for name in fields if name not in self.field_names)
        if unknown:
            raise self._invalid(
                f"unknown field{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)}; "
                f"the input has {', '.join(sorted(self.field_names)) or 'no fields'}",
                [FieldError(name, "unknown field") for name in unknown],
            )

    def _validated(self, validate: Any) -> ModelInput:
        try:
            value = validate()
        except ValidationError as exc:
            errors = [_field_error(error) for error in exc.errors(include_url=False)]
            raise self._invalid("; ".join(f"{e.field}: {e.message}" for e in errors), errors) from None
        canonical = self.canonical(value)
        return ModelInput(value, canonical, hashlib.blake2b(canonical, digest_size=DIGEST_BYTES).hexdigest())


def _top_level(schema: dict[str, Any]) -> dict[str, Any]:
    """The object schema itself, where pydantic put it behind a `$ref` (recursive models)."""
    ref = schema.get("$ref")
    if isinstance(ref, str):
        definitions: dict[str, dict[str, Any]] = schema.get("$defs", {})
        return definitions.get(ref.rsplit("/", 1)[-1], schema)
    return schema


def _field_error(error: ErrorDetails) -> FieldError:
    field = ".".join(str(part) for part in error["loc"]) or "(input)"
    message = error["msg"]
    # A validator's own ValueError reads better without pydantic's "Value error, " prefix.
    if error["type"] == "value_error" and "ctx" in error:
        message = str(error["ctx"].get("error", message))
    return FieldError(field, message)


def _json_type(value: object) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return "a number"
