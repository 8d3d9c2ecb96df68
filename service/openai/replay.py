"""A stored completion told again as the event stream a client asked for: per choice a role chunk,
its content (with its logprobs), refusal and tool calls, a finish chunk; then a usage chunk when
the client asked for one and usage is known; then `data: [DONE]`. The text a client accumulates
from it is exactly the stored completion's.
"""

from __future__ import annotations

from typing import Any

import orjson

from service.openai.sse import DONE, encode_data


def replay_events(completion: dict[str, Any], *, include_usage: bool) -> bytes:
    """The whole event stream for `completion` (a chat.completion or a text_completion)."""
    chat = completion.get("object") == "chat.completion"
    base: dict[str, Any] = {
        "id": completion.get("id"),
        "object": "chat.completion.chunk" if chat else "text_completion",
        "created": completion.get("created"),
        "model": completion.get("model"),
    }
    if completion.get("system_fingerprint") is not None:
        base["system_fingerprint"] = completion["system_fingerprint"]
    chunks: list[dict[str, Any]] = []
    for choice in completion.get("choices") or ():
        pieces = _chat_pieces(choice) if chat else _text_pieces(choice)
        chunks.extend({**base, "choices": [piece]} for piece in pieces)
    usage = completion.get("usage")
    if include_usage and usage is not None:
        chunks.append({**base, "choices": [], "usage": usage})
    return b"".join(encode_data(orjson.dumps(chunk)) for chunk in chunks) + DONE


def _chat_pieces(choice: dict[str, Any]) -> list[dict[str, Any]]:
    index = choice.get("index", 0)
    message = choice.get("message") or {}
    logprobs = choice.get("logprobs")

    def piece(delta: dict[str, Any], finish_reason: str | None = None, probs: Any = None) -> dict[str, Any]:
        return {"index": index, "delta": delta, "logprobs": probs, "finish_reason": finish_reason}

    pieces = [piece({"role": message.get("role") or "assistant"})]
    content = message.get("content")
    if content:
        pieces.append(piece({"content": content}, probs=logprobs))
        logprobs = None
    if message.get("refusal"):
        pieces.append(piece({"refusal": message["refusal"]}))
    tool_calls = message.get("tool_calls")
    if tool_calls:
        pieces.append(piece({"tool_calls": [{"index": i, **call} for i, call in enumerate(tool_calls)]}))
    if message.get("function_call"):
        pieces.append(piece({"function_call": message["function_call"]}))
    pieces.append(piece({}, choice.get("finish_reason"), logprobs))
    return pieces


def _text_pieces(choice: dict[str, Any]) -> list[dict[str, Any]]:
    index = choice.get("index", 0)
    return [
        {
            "index": index,
            "text": choice.get("text") or "",
            "logprobs": choice.get("logprobs"),
            "finish_reason": None,
        },
        {"index": index, "text": "", "logprobs": None, "finish_reason": choice.get("finish_reason")},
    ]
