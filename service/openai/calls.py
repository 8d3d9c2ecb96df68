"""From an OpenAI request to the call the gateway makes and the key it caches the answer under.

The key is the canonical JSON (json_inputs.normalized, sorted keys) of the route, the client's
scope (scope.py) and the body without IGNORED_FIELDS, the fields that do not change the answer. So
a streaming and a non-streaming request for one completion share an entry, and so do two spellings
of one body. The upstream is sent exactly the key's body (plus how to stream): the answer cached
under a key is the answer to that key's request.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TypeVar

import orjson
from pydantic import JsonValue

from service.models.inputs import DIGEST_BYTES, ModelInput
from service.models.json_bytes import dumps_kept
from service.models.json_inputs import MAX_DEPTH, JsonObject, TooDeep, normalized
from service.openai.errors import bad_request
from service.openai.scope import Scope
from service.redis import keyspace

# Fields that do not change the answer, left out of the key and of what the upstream is sent:
# - stream, stream_options: how the answer travels; one entry answers JSON and stream alike.
# - user, metadata: who asks and the caller's labels; a shared generation is nobody's in particular.
# - store: whether OpenAI keeps the completion for the caller's dashboard; a hit never reaches it.
IGNORED_FIELDS = frozenset({"stream", "stream_options", "user", "metadata", "store"})
MAX_CHOICES = 128  # `n`: OpenAI's own bound
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Route:
    name: str  # as in keys and metrics: "chat/completions"
    required: str  # the body's one field no request goes without
    streams: bool

    @property
    def path(self) -> str:
        return f"/v1/{self.name}"


CHAT = Route("chat/completions", "messages", streams=True)
COMPLETIONS = Route("completions", "prompt", streams=True)
EMBEDDINGS = Route("embeddings", "input", streams=False)
ROUTES = (CHAT, COMPLETIONS, EMBEDDINGS)


@dataclass(frozen=True, slots=True)
class GatewayCall:
    """One request as the gateway serves it: what to ask upstream, and how the client wants it."""

    route: Route
    key: str  # the cache key (the live generation's too)
    body: JsonObject  # normalized, without IGNORED_FIELDS: the key's body, sent upstream
    stream: bool  # the client wants server-sent events
    include_usage: bool  # ... ending with a usage chunk
    choices: int  # `n`: how many choices a complete answer has
    sampled: bool  # temperature > 0 and no seed: a draw, not the model's one answer
    # Sent upstream; never part of a key, a log line or a repr.
    authorization: str | None = field(repr=False, default=None)
    scope: str = field(repr=False, default="")  # the client's scope label, part of the key

    def upstream_body(self, *, stream: bool) -> bytes:
        if not stream:
            return orjson.dumps(self.body)
        # Usage asked for always: it is what the tokens-served-from-cache count reads, and a
        # listener who did not ask for it is not sent it (see streaming.py).
        return orjson.dumps({**self.body, "stream": True, "stream_options": {"include_usage": True}})


def decode_call(
    route: Route, raw: bytes, *, version: str, scope: Scope, authorization: str | None
) -> ModelInput:
    """The request body `raw` as a ModelInput whose value is its GatewayCall; GatewayRefused (400,
    or 401 from the scope) for a request the gateway cannot serve."""
    label = scope.label(authorization)
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise bad_request(f"the body is not JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise bad_request("the body must be a JSON object")
    try:
        body: JsonObject = normalized({k: v for k, v in parsed.items() if k not in IGNORED_FIELDS})
    except TooDeep:
        raise bad_request(f"the body is nested more than {MAX_DEPTH} levels deep") from None
    stream = _optional(parsed, "stream", bool, "a boolean", False)
    if stream and not route.streams:
        raise bad_request(f"{route.path} does not stream", "stream")
    options: JsonObject = _optional(parsed, "stream_options", dict, "an object", {})
    include_usage = _optional(options, "include_usage", bool, "a boolean", False, "stream_options.")
    _require(route, body)
    choices = _optional(body, "n", int, "a whole number", 1)
    if not 1 <= choices <= MAX_CHOICES:
        raise bad_request(f"n must be between 1 and {MAX_CHOICES}", "n")
    call = GatewayCall(
        route=route,
        key="",
        body=body,
        stream=stream,
        include_usage=include_usage,
        choices=choices,
        sampled=route is not EMBEDDINGS and _is_sampled(body),
        authorization=scope.upstream_authorization(authorization),
        scope=label,
    )
    return asking(call, body, version=version)


def asking(call: GatewayCall, body: JsonObject, *, version: str) -> ModelInput:
    """`call` asking `body` (normalized), under the key a request of that body has: how a list of
    embeddings inputs becomes one input per item (embeddings.py)."""
    # Kept with the entry: of its own size, not orjson's buffer (see json_bytes.py).
    canonical = dumps_kept(
        {"route": call.route.name, "scope": call.scope, "body": body}, option=orjson.OPT_SORT_KEYS
    )
    digest = hashlib.blake2b(canonical, digest_size=DIGEST_BYTES).hexdigest()
    return ModelInput(replace(call, key=keyspace.entry_key(version, digest), body=body), canonical, digest)


def _require(route: Route, body: JsonObject) -> None:
    value = body.get(route.required)
    if value is None:
        raise bad_request(f"{route.path} needs `{route.required}`", route.required)
    if route is CHAT and (not isinstance(value, list) or not value):
        raise bad_request("messages must be a non-empty array", "messages")


def _is_sampled(body: JsonObject) -> bool:
    """Whether the answer is a random draw: a temperature above 0 (OpenAI's default is 1) and no
    seed to repeat it by."""
    temperature = body.get("temperature", 1)
    if temperature is not None and (
        isinstance(temperature, bool) or not isinstance(temperature, int | float)
    ):
        raise bad_request("temperature must be a number", "temperature")
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise bad_request("seed must be a whole number", "seed")
    return seed is None and (temperature is None or temperature > 0)


def _optional(
    body: Mapping[str, JsonValue], name: str, kind: type[T], described: str, default: T, prefix: str = ""
) -> T:
    """`body[name]` if it is a `kind`, `default` if it is absent or null; 400 otherwise."""
    value = body.get(name)
    if value is None:
        return default
    # JSON's true is no number of choices: bool is an int subclass in Python only.
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise bad_request(f"{prefix}{name} must be {described}", prefix + name)
    return value
