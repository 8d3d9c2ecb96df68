"""The gateway's one orchestrating class: an OpenAI request in, an answer from the cache or the
upstream out, as JSON or as a stream.

A JSON request asks Predictions, like /predict. A streaming one listens to the key's live log first,
then asks Predictions: if this process generates the answer (its own fill, or one it joined), the
client is sent each event as it arrives; otherwise (a hit, another replica's fill, a non-streamed
generation) it is sent the stored completion replayed. Requests the cache must not answer
(Cache-Control: no-store, sampled ones when CACHE_SAMPLED is off, no cache at all) get a generation
of their own, which stops when they hang up.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import orjson
from aiohttp import web
from pydantic import JsonValue

from service.caching.entry import CachedPrediction
from service.caching.freshness import Freshness, Outcome
from service.caching.predictions import Answer, Predictions
from service.errors import ModelError, ModelTimeout, PredcacheError
from service.metrics import Metrics
from service.models.inputs import ModelInput
from service.openai import headers as cache_headers
from service.openai import streaming
from service.openai.cache_control import CacheDirectives
from service.openai.calls import EMBEDDINGS, GatewayCall, Route, decode_call
from service.openai.embeddings import combined, item_inputs, items_of
from service.openai.errors import JSON, bad_request
from service.openai.live import EventLog
from service.openai.model import OpenAIUpstreamModel
from service.openai.replay import replay_events
from service.openai.upstream import UpstreamFailed

# Entries whose token counts are remembered, so that a JSON hit does not parse its body to count them.
USAGE_MEMO_ENTRIES = 4096


class Gateway:
    def __init__(
        self,
        model: OpenAIUpstreamModel,
        predictions: Predictions,
        metrics: Metrics,
        *,
        cache_sampled: bool,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.model = model
        self.predictions = predictions
        self.metrics = metrics
        self.cache_sampled = cache_sampled
        self._clock = clock
        self._bypasses = itertools.count()
        self._usage: dict[tuple[str, float], tuple[int, int]] = {}

    def decode(self, route: Route, raw: bytes, authorization: str | None) -> ModelInput:
        return decode_call(
            route, raw, version=self.model.version, scope=self.model.scope, authorization=authorization
        )

    async def answer(
        self, request: web.Request, model_input: ModelInput, directives: CacheDirectives
    ) -> tuple[web.StreamResponse, str]:
        """The response to a completion or embeddings request, and its X-Cache."""
        call: GatewayCall = model_input.value
        if directives.no_store or (call.sampled and not self.cache_sampled) or self.predictions.cache is None:
            return await self._bypass(request, model_input), "BYPASS"
        if call.route is EMBEDDINGS and (items := items_of(call)) is not None:
            return await self._embed_items(model_input, items, directives.freshness)
        if not call.stream:
            answer = await self.predictions.get(model_input, directives.freshness)
            self._count_tokens(answer)
            headers = {"Content-Type": JSON, **cache_headers.answer_headers(answer, self._clock())}
            return web.Response(body=answer.entry.body, headers=headers), answer.outcome.value
        return await self._stream(request, model_input, directives.freshness)

    async def _embed_items(
        self, model_input: ModelInput, items: list[JsonValue], freshness: Freshness
    ) -> tuple[web.StreamResponse, str]:
        """A list of embeddings inputs, each from its own entry or its own fill (embeddings.py): the
        misses of all of them go upstream together (the model's EmbeddingBatches)."""
        if len(items) > self.model.max_batch_items:
            raise bad_request(f"input holds {len(items)} items, over {self.model.max_batch_items}", "input")
        inputs = item_inputs(model_input, items, version=self.model.version)
        answers: list[Answer] = []
        for answer in await self.predictions.get_many(inputs, freshness):
            if isinstance(answer, PredcacheError):
                raise answer  # the request fails as a whole, as the upstream's would
            self._count_tokens(answer)
            answers.append(answer)
        headers = cache_headers.items_headers(answers, self._clock())
        body = combined([answer.entry.body for answer in answers])
        return web.Response(body=body, headers={"Content-Type": JSON, **headers}), headers["X-Cache"]

    async def _stream(
        self, request: web.Request, model_input: ModelInput, freshness: Freshness
    ) -> tuple[web.StreamResponse, str]:
        call: GatewayCall = model_input.value
        with self.model.live.listen(call.key) as log:
            joined = log.begun  # a generation of this key was running when the request came
            if not joined:
                self.model.remote.listener_arrived(call.key)
            getting = asyncio.ensure_future(self.predictions.get(model_input, freshness))
            try:
                await _first_news(getting, log)
                answered = getting.done() and not getting.cancelled() and getting.exception() is None
                if log.events and not (answered and getting.result().outcome is not Outcome.MISS):
                    live = cache_headers.live_headers(joined=joined or log.remote, forced=freshness.no_cache)
                    response = await streaming.relay(request, log, live, include_usage=call.include_usage)
                    return response, "MISS"
                answer = await getting
            finally:
                _let_go(getting)
        self._count_tokens(answer)
        events = replay_events(orjson.loads(answer.entry.body), include_usage=call.include_usage)
        headers = cache_headers.answer_headers(answer, self._clock())
        return await streaming.replay(request, events, headers), answer.outcome.value

    async def _bypass(self, request: web.Request, model_input: ModelInput) -> web.StreamResponse:
        """A generation of this request's own, under a key of its own: nothing read, nothing stored."""
        call: GatewayCall = model_input.value
        own = replace(call, key=f"{call.key}:bypass:{next(self._bypasses)}")
        own_input = ModelInput(own, model_input.canonical, model_input.digest)
        runner = self.predictions.runner
        if not call.stream:
            body = await runner.predict(own_input)
            return web.Response(body=body, headers={"Content-Type": JSON, **cache_headers.BYPASS})
        with self.model.live.listen(own.key) as log:
            generating = asyncio.ensure_future(runner.predict(own_input))
            try:
                await _first_news(generating, log)
                if log.events:
                    return await streaming.relay(
                        request, log, cache_headers.BYPASS, include_usage=call.include_usage
                    )
                body = await generating  # no event: it failed, and its error is the answer
            finally:
                # Nobody else listens to it: a client that leaves stops its generation.
                generating.cancel()
                _let_go(generating)
        events = replay_events(orjson.loads(body), include_usage=call.include_usage)
        return await streaming.replay(request, events, cache_headers.BYPASS)

    async def models(self, authorization: str | None) -> web.Response:
        """GET /v1/models, passed through (with predcache's key in shared mode, once the client's
        token is checked)."""
        self.model.scope.label(authorization)
        upstream = self.model.upstream
        try:
            passed = await upstream.get("/models", self.model.scope.upstream_authorization(authorization))
        except TimeoutError:
            raise ModelTimeout("GET /v1/models", upstream.timeout_s) from None
        except UpstreamFailed as exc:
            raise ModelError("GET /v1/models", str(exc)) from None
        return web.Response(
            status=passed.status,
            body=passed.body,
            headers={"Content-Type": passed.content_type, **cache_headers.BYPASS},
        )

    def _count_tokens(self, answer: Answer) -> None:
        """Tokens served from the cache, from the stored answer's usage (when the upstream gave one)."""
        if answer.outcome is Outcome.MISS:
            return
        prompt, completion = self._usage_of(answer.entry)
        llm = self.metrics.llm
        llm.cached_prompt_tokens.inc(prompt)
        llm.cached_completion_tokens.inc(completion)

    def _usage_of(self, entry: CachedPrediction) -> tuple[int, int]:
        memo = (entry.key, entry.predicted_at)
        counted = self._usage.get(memo)
        if counted is None:
            usage = _usage(orjson.loads(entry.body))
            counted = (_tokens(usage, "prompt_tokens"), _tokens(usage, "completion_tokens"))
            if len(self._usage) >= USAGE_MEMO_ENTRIES:
                self._usage.clear()  # bounded; the next hits refill it
            self._usage[memo] = counted
        return counted


async def _first_news(task: asyncio.Future[Any], log: EventLog) -> None:
    """Wait until the answer is known, or the log has an event, or the log has ended."""
    while not task.done() and not log.events and log.ending is None:
        changed = asyncio.ensure_future(log.changed())
        try:
            await asyncio.wait((task, changed), return_when=asyncio.FIRST_COMPLETED)
        finally:
            changed.cancel()


def _let_go(task: asyncio.Future[Any]) -> None:
    """Stop waiting for `task` (a single-flight fill goes on: it is shielded), and mark its error,
    if any, as seen: the response already says what went wrong, or the client left."""
    if not task.done():
        task.cancel()
    else:
        with contextlib.suppress(asyncio.CancelledError):
            task.exception()


def _usage(answer: Any) -> dict[str, Any]:
    usage = answer.get("usage") if isinstance(answer, dict) else None
    return usage if isinstance(usage, dict) else {}


def _tokens(usage: dict[str, Any], name: str) -> int:
    value = usage.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0
