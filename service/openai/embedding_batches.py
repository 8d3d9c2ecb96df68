"""Embeddings inputs asked at about the same time, with the same parameters and credential, sent upstream
as one request: the misses of one list request (each filled on its own, embeddings.py) become one call.

A batch closes once no input joined it for `wait_s` (at most 5 x `wait_s` after its first), or at
`max_items`. Each input gets the upstream's embedding for it and a share of the batch's usage, in
proportion to its length (the upstream counts tokens per request, not per input). A batch the upstream
refuses as bad input (400, 413, 422) is asked again input by input, so that one bad input fails only
the requests that asked for it.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

import orjson
from pydantic import JsonValue

from service.models.json_inputs import JsonObject
from service.openai.calls import GatewayCall
from service.openai.embeddings import one_answer, shares, weight
from service.openai.errors import UpstreamAnswered
from service.openai.upstream import OpenAIUpstream, UpstreamFailed

MAX_WAIT_FACTOR = 5
BAD_INPUT = frozenset({400, 413, 422})


@dataclass(eq=False)
class _Batch:
    call: GatewayCall  # its first input's: the parameters and credential every input shares
    inputs: list[JsonValue] = field(default_factory=list)
    answers: list[asyncio.Future[JsonValue]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)


class EmbeddingBatches:
    def __init__(self, upstream: OpenAIUpstream, *, wait_s: float, max_items: int) -> None:
        self._upstream = upstream
        self._wait_s = wait_s
        self._max_items = max_items
        self._open: dict[bytes, _Batch] = {}
        self._senders: set[asyncio.Task[None]] = set()

    async def embed(self, call: GatewayCall) -> JsonValue:
        """The answer to `call`, a request for one input, as the upstream would give it alone."""
        params = {name: value for name, value in call.body.items() if name != "input"}
        group = orjson.dumps([call.authorization, params], option=orjson.OPT_SORT_KEYS)
        batch = self._open.get(group)
        if batch is None:
            batch = self._open[group] = _Batch(call)
            sender = asyncio.create_task(self._send(group, batch))
            # Owned here, not by the first input's fill: every input of the batch waits on it.
            self._senders.add(sender)
            sender.add_done_callback(self._senders.discard)
        answer: asyncio.Future[JsonValue] = asyncio.get_running_loop().create_future()
        batch.inputs.append(call.body["input"])
        batch.answers.append(answer)
        batch.arrived.set()
        if len(batch.inputs) >= self._max_items:
            del self._open[group]  # full: the next input starts another
        return await answer

    async def _send(self, group: bytes, batch: _Batch) -> None:
        loop = asyncio.get_running_loop()
        cap = loop.time() + self._wait_s * MAX_WAIT_FACTOR
        while self._open.get(group) is batch:
            batch.arrived.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(self._wait_s, cap - loop.time())):
                    await batch.arrived.wait()
            if not batch.arrived.is_set() or loop.time() >= cap:
                break
        if self._open.get(group) is batch:
            del self._open[group]
        await self._answer(batch.call, batch.inputs, batch.answers)

    async def _answer(
        self, call: GatewayCall, inputs: list[JsonValue], answers: list[asyncio.Future[JsonValue]]
    ) -> None:
        try:
            results = await self._ask(call, inputs)
        except UpstreamAnswered as refused:
            if refused.status in BAD_INPUT and len(inputs) > 1:
                await asyncio.gather(
                    *(
                        self._answer(call, [one], [answer])
                        for one, answer in zip(inputs, answers, strict=True)
                    )
                )
                return
            _fail(answers, refused)
            return
        except Exception as exc:
            _fail(answers, exc)
            return
        for answer, result in zip(answers, results, strict=True):
            if not answer.done():  # its fill may have been cancelled (shutdown)
                answer.set_result(result)

    async def _ask(self, call: GatewayCall, inputs: list[JsonValue]) -> list[JsonValue]:
        """One upstream request for `inputs`: each input's one-input answer, in order."""
        body = orjson.dumps({**call.body, "input": inputs})
        answer: JsonObject = await self._upstream.post_json("/embeddings", body, call.authorization)
        data = answer.get("data")
        embeddings = [d for d in data if isinstance(d, dict)] if isinstance(data, list) else []
        if len(embeddings) != len(inputs):
            raise UpstreamFailed(f"the upstream answered {len(inputs)} inputs without one embedding each")
        embeddings.sort(key=_index)
        usage = answer.get("usage")
        total = usage.get("prompt_tokens") if isinstance(usage, dict) else None
        tokens: list[int | None] = [None] * len(inputs)
        if isinstance(total, int) and not isinstance(total, bool):
            tokens = list(shares(total, [weight(one) for one in inputs]))
        model = answer.get("model")
        return [
            one_answer(model, embedding, count) for embedding, count in zip(embeddings, tokens, strict=True)
        ]

    async def close(self) -> None:
        for sender in list(self._senders):
            sender.cancel()
        await asyncio.gather(*self._senders, return_exceptions=True)


def _fail(answers: list[asyncio.Future[JsonValue]], exc: BaseException) -> None:
    for answer in answers:
        if not answer.done():
            answer.set_exception(exc)


def _index(embedding: dict[str, JsonValue]) -> int:
    index = embedding.get("index")
    return index if isinstance(index, int) else 0
