"""LLM mode's pure parts: the chat request bodies of a `--prompts` file, and what one answer tells a load
test (when each token arrived, how many there were), read from its server-sent events or its JSON.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from .workload import jsonl_values


class PromptsError(ValueError):
    """A `--prompts` file that cannot be read, or a line that is neither a prompt string nor a body."""


def load_prompts(path: Path, *, model: str, stream: bool, max_tokens: int | None) -> tuple[bytes, ...]:
    """One chat completion body per non-blank line of a JSONL file.

    A line is either a JSON string, the user's prompt (`{"model": model, "messages": [{"role": "user",
    "content": prompt}]}`), or a JSON object, a whole request body sent as it is. `stream` sets every
    body's `stream` (with `stream_options.include_usage`, so a server that counts tokens says how many);
    `max_tokens` sets it on the bodies made from strings.
    """
    bodies: list[bytes] = []
    for number, value in jsonl_values(path, "--prompts", PromptsError):
        if isinstance(value, str):
            body: dict[str, object] = {"model": model, "messages": [{"role": "user", "content": value}]}
        elif isinstance(value, dict):
            body = value
        else:
            kind = type(value).__name__
            raise PromptsError(
                f"--prompts {str(path)!r} line {number}: neither a prompt string nor a request "
                f"object (a {kind})"
            )
        if max_tokens is not None and "max_tokens" not in body and "max_completion_tokens" not in body:
            body["max_tokens"] = max_tokens
        body["stream"] = stream
        if stream:
            body.setdefault("stream_options", {"include_usage": True})
        else:
            body.pop("stream_options", None)
        bodies.append(orjson.dumps(body))
    if not bodies:
        raise PromptsError(f"--prompts {str(path)!r} holds no prompts")
    return tuple(bodies)


class SSEDecoder:
    """Server-sent events from the bytes of a response, read as the WHATWG rules (and the openai SDK)
    read them: `data:` lines joined by newlines, an event dispatched at a blank line, comments and
    other fields skipped."""

    def __init__(self) -> None:
        self._buffer = b""
        self._data: list[bytes] = []

    def feed(self, chunk: bytes) -> Iterator[str]:
        """The data of every event completed by `chunk`."""
        self._buffer += chunk
        while True:
            end = _line_end(self._buffer)
            if end is None:
                return
            line, self._buffer = self._buffer[: end[0]], self._buffer[end[1] :]
            if not line:
                if self._data:
                    data, self._data = b"\n".join(self._data), []
                    yield data.decode("utf-8", "replace")
                continue
            name, _, value = line.partition(b":")
            if name == b"data":
                self._data.append(value[1:] if value.startswith(b" ") else value)


def _line_end(buffer: bytes) -> tuple[int, int] | None:
    """Where the first line of `buffer` ends and the next begins (CRLF, LF or CR), if it is complete."""
    lf = buffer.find(b"\n")
    cr = buffer.find(b"\r")
    if cr == -1 or (lf != -1 and lf < cr):
        return None if lf == -1 else (lf, lf + 1)
    if cr == len(buffer) - 1:
        return None  # a CR last: the LF of a CRLF may be in the next chunk
    return (cr, cr + 2) if buffer[cr + 1 : cr + 2] == b"\n" else (cr, cr + 1)


@dataclass
class Answer:
    """One completion as the client saw it: when each token-bearing event came (seconds from the
    request's start), the tokens the server counted (usage), and whether the stream ended properly."""

    token_times: list[float] = field(default_factory=list)
    completion_tokens: int | None = None
    done: bool = False
    error: str | None = None

    @property
    def output_tokens(self) -> int:
        """The server's count when it gave one, else the token-bearing events (one token each from
        llama.cpp's server and vLLM)."""
        return self.completion_tokens if self.completion_tokens is not None else len(self.token_times)

    @property
    def ttft_s(self) -> float | None:
        return self.token_times[0] if self.token_times else None

    def inter_token_s(self) -> list[float]:
        times = self.token_times
        return [later - earlier for earlier, later in itertools.pairwise(times)]

    def on_event(self, data: str, at_s: float) -> None:
        """One streamed event's data, received `at_s` into the request."""
        if data == "[DONE]":
            self.done = True
            return
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            self.error = "bad event"
            return
        if not isinstance(chunk, dict):
            self.error = "bad event"
            return
        if "error" in chunk:
            self.error = "error event"
            return
        if _carries_tokens(chunk):
            self.token_times.append(at_s)
        self._usage(chunk)

    def on_json(self, body: bytes, at_s: float) -> None:
        """A whole (non-streamed) completion, received `at_s` into the request: every token at once."""
        try:
            completion = orjson.loads(body)
        except orjson.JSONDecodeError:
            self.error = "bad response"
            return
        if not isinstance(completion, dict) or not isinstance(completion.get("choices"), list):
            self.error = "bad response"
            return
        self.token_times.append(at_s)
        self.done = True
        self._usage(completion)

    def _usage(self, chunk: dict[str, object]) -> None:
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            tokens = usage.get("completion_tokens")
            if isinstance(tokens, int) and not isinstance(tokens, bool):
                self.completion_tokens = tokens


def _carries_tokens(chunk: dict[str, object]) -> bool:
    """Whether a chunk carries generated text: a chat delta's content, reasoning or tool call, or a
    completion's text (the first chat chunk, the role alone, does not)."""
    choices = chunk.get("choices")
    if not isinstance(choices, list):
        return False
    for choice in choices:
        if not isinstance(choice, dict):
            continue
        delta = choice.get("delta")
        if isinstance(delta, dict) and (
            delta.get("content") or delta.get("reasoning_content") or delta.get("tool_calls")
        ):
            return True
        if choice.get("text"):
            return True
    return False
