"""Embeddings of a list of inputs, cached per item: each item is asked as a request of that one input
would be, under its own key, so a list of 100 texts of which 90 are cached costs the upstream one
request with the 10 others; the answer is put back together in the request's order, each embedding
with its index, and the items' usage summed.
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson
from pydantic import JsonValue

from service.models.inputs import ModelInput
from service.openai.calls import GatewayCall, asking
from service.openai.upstream import UpstreamFailed


def items_of(call: GatewayCall) -> list[JsonValue] | None:
    """The inputs of a list `input`, or None for one input (a string, or one array of token ids)."""
    value = call.body.get("input")
    if not isinstance(value, list) or not value:
        return None
    if all(isinstance(item, int) and not isinstance(item, bool) for item in value):
        return None  # token ids: one input
    return value


def item_inputs(model_input: ModelInput, items: Sequence[JsonValue], *, version: str) -> list[ModelInput]:
    """One input per item: the request with that item alone as its `input`."""
    call: GatewayCall = model_input.value
    return [asking(call, {**call.body, "input": item}, version=version) for item in items]


def one_answer(model: JsonValue, embedding: dict[str, JsonValue], tokens: int | None) -> JsonValue:
    """What the upstream answers a request for one input: how each item is stored."""
    answer: dict[str, JsonValue] = {
        "object": "list",
        "data": [{**embedding, "index": 0}],
        "model": model,
    }
    if tokens is not None:
        answer["usage"] = {"prompt_tokens": tokens, "total_tokens": tokens}
    return answer


def combined(bodies: Sequence[bytes]) -> bytes:
    """The answer to the whole list from each item's stored answer (a one-input response): the
    embeddings in order, indexed from 0, and the usage summed (left out unless every item has one)."""
    data: list[JsonValue] = []
    tokens: int | None = 0
    model: JsonValue = None
    for index, body in enumerate(bodies):
        answer = orjson.loads(body)
        embeddings = answer.get("data") if isinstance(answer, dict) else None
        if not isinstance(embeddings, list) or len(embeddings) != 1 or not isinstance(embeddings[0], dict):
            raise UpstreamFailed("a cached embedding is not the answer to one input")
        data.append({**embeddings[0], "index": index})
        model = answer.get("model") if model is None else model
        usage = answer.get("usage")
        prompt = usage.get("prompt_tokens") if isinstance(usage, dict) else None
        if tokens is not None and isinstance(prompt, int) and not isinstance(prompt, bool):
            tokens += prompt
        else:
            tokens = None
    whole: dict[str, JsonValue] = {"object": "list", "data": data, "model": model}
    if tokens is not None:
        whole["usage"] = {"prompt_tokens": tokens, "total_tokens": tokens}
    return orjson.dumps(whole)


def shares(total: int, weights: Sequence[int]) -> list[int]:
    """`total` split in proportion to `weights`, in whole numbers that add up to it (the largest
    remainders get the units left over)."""
    weight = sum(weights)
    if weight <= 0:
        return [total // len(weights) + (i < total % len(weights)) for i in range(len(weights))]
    exact = [total * w / weight for w in weights]
    parts = [int(x) for x in exact]
    by_remainder = sorted(range(len(weights)), key=lambda i: exact[i] - parts[i], reverse=True)
    for i in by_remainder[: total - sum(parts)]:
        parts[i] += 1
    return parts


def weight(item: JsonValue) -> int:
    """How much of a batch's tokens an item is taken to have used: its token ids, else its length."""
    if isinstance(item, list):
        return len(item)
    return len(item) if isinstance(item, str) else 1
