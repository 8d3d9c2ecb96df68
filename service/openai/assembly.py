"""A streamed answer assembled into the completion it stands for, as the non-streamed API would
have answered it: per choice the role, content, refusal, `tool_calls` (by index, their arguments
joined), `finish_reason` and `logprobs`; for the whole, id, created, model, system_fingerprint and
usage. It is complete only when `data: [DONE]` arrived, no error event did, and each of the `n`
choices has a finish_reason: only then is it stored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from service.openai.calls import CHAT, Route
from service.openai.sse import ServerSentEvent

# Top-level fields of a chunk carried into the completion when present (the last one seen wins).
_TOP_FIELDS = ("id", "created", "model", "system_fingerprint", "service_tier")
_TEXT_LOGPROBS = ("tokens", "token_logprobs", "top_logprobs", "text_offset")


@dataclass
class _Choice:
    role: str | None = None
    content: list[str] | None = None  # None: no content delta at all (a tool call's message)
    refusal: list[str] | None = None
    tool_calls: dict[int, dict[str, Any]] = field(default_factory=dict)
    function_call: dict[str, str] | None = None  # the legacy single function call
    logprobs: dict[str, list[Any]] | None = None
    finish_reason: str | None = None


class Assembler:
    """Feed it every event of one stream (`add`); then `problem()` says why it is not a complete
    answer (None when it is) and `completion()` gives the answer."""

    def __init__(self, route: Route, choices: int) -> None:
        self.route = route
        self.expected_choices = choices
        self.done = False  # `data: [DONE]` arrived
        self.failure: str | None = None  # an error event, or an event that is not a chunk
        self._top: dict[str, Any] = {}
        self._usage: Any = None
        self._choices: dict[int, _Choice] = {}

    def add(self, event: ServerSentEvent) -> bool:
        """Take in one event; True if it is a usage chunk and nothing else (no choices)."""
        if event.is_done:
            self.done = True  # after an error event too: that stream ended as it meant to
            return False
        if self.done or self.failure is not None:
            return False
        try:
            chunk = orjson.loads(event.data)
        except orjson.JSONDecodeError:
            self.failure = "an event that is not JSON"
            return False
        if event.event == "error" or not isinstance(chunk, dict) or "error" in chunk:
            self.failure = "an error event"
            return False
        for name in _TOP_FIELDS:
            if chunk.get(name) is not None:
                self._top[name] = chunk[name]
        if chunk.get("usage") is not None:
            self._usage = chunk["usage"]
        choices = chunk.get("choices")
        if not isinstance(choices, list):
            self.failure = "a chunk without choices"
            return False
        for delta in choices:
            if not isinstance(delta, dict) or not isinstance(delta.get("index", 0), int):
                self.failure = "a malformed choice"
                return False
            self._take(self._choices.setdefault(delta.get("index", 0), _Choice()), delta)
        return not choices and self._usage is not None

    def problem(self) -> str | None:
        if self.failure is not None:
            return self.failure
        if not self.done:
            return "the stream ended before data: [DONE]"
        if sorted(self._choices) != list(range(self.expected_choices)):
            return f"{len(self._choices)} choices arrived of {self.expected_choices}"
        unfinished = [i for i, choice in self._choices.items() if choice.finish_reason is None]
        if unfinished:
            return f"choice {unfinished[0]} has no finish_reason"
        return None

    def completion(self) -> dict[str, Any]:
        chat = self.route is CHAT
        answer: dict[str, Any] = {
            "id": self._top.get("id"),
            "object": "chat.completion" if chat else "text_completion",
            "created": self._top.get("created"),
            "model": self._top.get("model"),
            "choices": [
                (_message if chat else _text)(index, self._choices[index]) for index in sorted(self._choices)
            ],
        }
        for name in ("system_fingerprint", "service_tier"):
            if name in self._top:
                answer[name] = self._top[name]
        if self._usage is not None:
            answer["usage"] = self._usage
        return answer

    def _take(self, choice: _Choice, delta_choice: dict[str, Any]) -> None:
        if delta_choice.get("finish_reason") is not None:
            choice.finish_reason = delta_choice["finish_reason"]
        logprobs = delta_choice.get("logprobs")
        if isinstance(logprobs, dict):
            choice.logprobs = choice.logprobs or {}
            for name, items in logprobs.items():
                if isinstance(items, list):
                    choice.logprobs.setdefault(name, []).extend(items)
        if self.route is not CHAT:
            if isinstance(delta_choice.get("text"), str):
                choice.content = (choice.content or []) + [delta_choice["text"]]
            return
        delta = delta_choice.get("delta") or {}
        if delta.get("role") is not None:
            choice.role = delta["role"]
        if isinstance(delta.get("content"), str):
            choice.content = choice.content if choice.content is not None else []
            choice.content.append(delta["content"])
        if isinstance(delta.get("refusal"), str):
            choice.refusal = choice.refusal if choice.refusal is not None else []
            choice.refusal.append(delta["refusal"])
        for call in delta.get("tool_calls") or ():
            _merge_tool_call(choice.tool_calls, call)
        function_call = delta.get("function_call")
        if isinstance(function_call, dict):
            known = choice.function_call = choice.function_call or {"name": "", "arguments": ""}
            for name in ("name", "arguments"):
                if isinstance(function_call.get(name), str):
                    known[name] += function_call[name]


def _merge_tool_call(calls: dict[int, dict[str, Any]], delta: Any) -> None:
    """A tool call arrives in pieces sharing an index: its id, type and name once, its arguments
    in fragments to be joined."""
    if not isinstance(delta, dict):
        return
    call = calls.setdefault(delta.get("index", 0), {"function": {"name": "", "arguments": ""}})
    for name in ("id", "type"):
        if delta.get(name) is not None:
            call[name] = delta[name]
    function = delta.get("function") or {}
    for name in ("name", "arguments"):
        if isinstance(function.get(name), str):
            call["function"][name] += function[name]


def _message(index: int, choice: _Choice) -> dict[str, Any]:
    message: dict[str, Any] = {
        "role": choice.role or "assistant",
        "content": None if choice.content is None else "".join(choice.content),
    }
    if choice.refusal is not None:
        message["refusal"] = "".join(choice.refusal)
    if choice.tool_calls:
        message["tool_calls"] = [choice.tool_calls[i] for i in sorted(choice.tool_calls)]
    if choice.function_call is not None:
        message["function_call"] = choice.function_call
    return {
        "index": index,
        "message": message,
        "logprobs": choice.logprobs,
        "finish_reason": choice.finish_reason,
    }


def _text(index: int, choice: _Choice) -> dict[str, Any]:
    logprobs = choice.logprobs
    if logprobs is not None:
        logprobs = {name: logprobs.get(name, []) for name in _TEXT_LOGPROBS}
    return {
        "index": index,
        "text": "".join(choice.content or ()),
        "logprobs": logprobs,
        "finish_reason": choice.finish_reason,
    }
