"""The gateway's model: one generation per call, from the OpenAI-compatible upstream.

Predictions calls it as it calls any model (single-flight per key, the fleet's lease, the model
timeout, storing the answer), so its `predict` runs in the task the single-flight table owns, never
in a client's: a client that hangs up does not stop a generation others share. A streamed generation
writes each upstream event to the key's live log (live.py) as it arrives, for every listener in this
process, and returns the completion assembled from them; one that did not end properly raises, so
nothing is stored.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from pydantic import JsonValue

from service.errors import ConfigError, InvalidInput
from service.models.contract import Contract, Uncached
from service.models.json_inputs import JsonObject, JsonObjectCodec
from service.openai.assembly import Assembler
from service.openai.calls import EMBEDDINGS, GatewayCall
from service.openai.embedding_batches import EmbeddingBatches
from service.openai.embeddings import items_of
from service.openai.fanout import RemoteGenerations
from service.openai.live import COMPLETE, Ending, EventSink, LiveGenerations, LoggedEvent
from service.openai.scope import CredentialScope, Scope, SharedScope
from service.openai.sse import encode_event
from service.openai.upstream import OpenAIUpstream, UpstreamFailed, base_url
from service.settings.config import Settings

# UPSTREAM_MAX_RESPONSE_BYTES unset: an LLM's answer or stream (or a batch of embeddings) may be long.
DEFAULT_MAX_RESPONSE_BYTES = 32 * 1024 * 1024


class OpenAIUpstreamModel:
    """The model of `MODEL=openai+http(s)://HOST:PORT/v1`: its version is MODEL_VERSION."""

    def __init__(
        self,
        upstream: OpenAIUpstream,
        version: str,
        scope: Scope,
        *,
        batch_wait_s: float = 0.002,
        max_batch_items: int = 1000,
    ) -> None:
        self.upstream = upstream
        self.version = version
        self.scope = scope
        # Embeddings of one input each, asked together upstream (a list request's misses).
        self.embeddings = EmbeddingBatches(upstream, wait_s=batch_wait_s, max_items=max_batch_items)
        self.max_batch_items = max_batch_items
        self.live = LiveGenerations()
        # Generations shared with other replicas; the app gives it the relay when there is Redis.
        self.remote = RemoteGenerations(self.live, None, held={}, remote_fills={})
        # The upstream's time to first event, in seconds (set by the app to its metrics).
        self.observe_ttft: Callable[[float], None] = lambda _seconds: None

    @classmethod
    def from_settings(cls, settings: Settings) -> OpenAIUpstreamModel:
        """The gateway the settings describe; ConfigError naming a setting that is missing or
        has no meaning here."""
        if settings.model_version is None:
            raise ConfigError(
                "MODEL_VERSION", "required with MODEL=openai+...: it is part of every cache key"
            )
        for name, value in (
            ("UPSTREAM_VERSION_HEADER", settings.upstream_version_header),
            ("INPUT_SCHEMA", settings.input_schema),
        ):
            if value is not None:
                raise ConfigError(name, "only for an upstream model (MODEL=http://...), not MODEL=openai+...")
        scope: Scope
        if settings.upstream_api_key is not None:
            scope = SharedScope(settings.upstream_api_key, settings.gateway_api_keys)
        elif settings.gateway_api_keys:
            raise ConfigError(
                "GATEWAY_API_KEYS", "only with UPSTREAM_API_KEY (clients' own keys go upstream)"
            )
        elif settings.cache_scope_secret is None:
            raise ConfigError(
                "CACHE_SCOPE_SECRET",
                "required with MODEL=openai+... unless UPSTREAM_API_KEY is set: the cache is scoped by "
                "an HMAC of each client's credential under it (the same on every replica)",
            )
        else:
            scope = CredentialScope(settings.cache_scope_secret)
        upstream = OpenAIUpstream(
            base_url(settings.model),
            timeout_s=settings.model_timeout_s,
            max_connections=settings.upstream_max_connections,
            max_response_bytes=settings.upstream_max_response_bytes or DEFAULT_MAX_RESPONSE_BYTES,
        )
        return cls(
            upstream,
            settings.model_version,
            scope,
            batch_wait_s=settings.batch_wait_ms / 1000,
            max_batch_items=settings.max_batch_items,
        )

    def contract(self) -> Contract:
        codec = JsonObjectCodec()
        return Contract(
            version=self.version,
            input_type=JsonObject,
            output_type=JsonValue,
            predict=self.predict,
            predict_batch=None,
            argument=_same,
            output=_same_output,
            check=None,
            invalid=InvalidInput,
            inputs=codec,
        )

    async def predict(self, call: GatewayCall) -> JsonValue | Uncached:
        """The upstream's answer to `call`, streamed to the key's live log when the call streams."""
        with self.live.produce(call.key, streaming=call.stream) as log:
            if call.stream:
                async with self.remote.publishing(call.key, log) as sink:
                    return await self._stream(call, sink)
            if call.route is EMBEDDINGS and items_of(call) is None:
                embedded = await self.embeddings.embed(call)
                log.end(COMPLETE)
                return embedded
            answer = await self.upstream.post_json(
                "/" + call.route.name, call.upstream_body(stream=False), call.authorization
            )
            log.end(COMPLETE)
            # Served either way; stored only when whole, as a streamed answer must be.
            return answer if _is_whole(call, answer) else Uncached(answer)

    async def _stream(self, call: GatewayCall, log: EventSink) -> JsonValue:
        assembler = Assembler(call.route, call.choices)
        started = time.perf_counter()
        first = True
        body = call.upstream_body(stream=True)
        async with self.upstream.stream("/" + call.route.name, body, call.authorization) as events:
            async for event in events:
                if first:
                    first = False
                    self.observe_ttft(time.perf_counter() - started)
                usage_only = assembler.add(event)
                log.append(LoggedEvent(encode_event(event), usage_only))
        problem = assembler.problem()
        if problem is not None:
            # Passed on as it came: an error event (and what followed it) as sent; a stream that
            # stopped before `data: [DONE]` is cut for its listeners too.
            log.end(Ending(complete=False, reason=problem, cut=not assembler.done))
            raise UpstreamFailed(f"the upstream's stream is not a whole answer: {problem}")
        log.end(COMPLETE)
        return assembler.completion()


def _is_whole(call: GatewayCall, answer: JsonObject) -> bool:
    """A JSON answer with what makes it whole: every choice finished, or the embeddings' data."""
    if call.route is EMBEDDINGS:
        return isinstance(answer.get("data"), list)
    choices = answer.get("choices")
    return (
        isinstance(choices, list)
        and len(choices) == call.choices
        and all(isinstance(choice, dict) and choice.get("finish_reason") is not None for choice in choices)
    )


def _same(value: Any) -> Any:
    return value


def _same_output(result: Any, _query: Any) -> Any:
    return result
