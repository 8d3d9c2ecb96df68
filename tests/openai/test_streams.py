"""The event-stream codec, the assembly of a stream into a completion and its replay, without a
server: what openai-python's decoder reads is what the gateway writes, and a replay of an assembled
stream accumulates to the same answer."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from openai._streaming import SSEDecoder

from service.openai.assembly import Assembler
from service.openai.calls import CHAT, COMPLETIONS
from service.openai.replay import replay_events
from service.openai.sse import ServerSentEvent, SseDecoder, encode_event

STREAM = (
    b"data: first\r\n\r\n"
    b": a comment\n"
    b"event: named\nid: 7\ndata: two\ndata: lines\n\n"
    b"retry: 30\rdata:no space\r\r"
    b"data: [DONE]\n\n"
)


def decode_in_chunks(raw: bytes, size: int) -> list[ServerSentEvent]:
    decoder = SseDecoder()
    events = []
    for start in range(0, len(raw), size):
        events += decoder.feed(raw[start : start + size])
    return events + decoder.finish()


def openai_decode(raw: bytes, size: int) -> list[tuple[str | None, str, str | None]]:
    chunks = [raw[i : i + size] for i in range(0, len(raw), size)]
    return [(e.event, e.data, e.id) for e in SSEDecoder().iter_bytes(iter(chunks))]


@pytest.mark.parametrize("size", [1, 2, 3, 5, 1000])
def test_the_decoder_reads_what_openais_reads_whatever_the_chunking(size: int) -> None:
    events = decode_in_chunks(STREAM, size)
    assert [(e.event, e.data, e.id) for e in events] == openai_decode(STREAM, size)
    assert [e.data for e in events] == ["first", "two\nlines", "no space", "[DONE]"]
    assert events[1].event == "named"
    assert events[2].retry == 30
    assert events[-1].is_done


@given(
    st.lists(
        st.builds(
            ServerSentEvent,
            # An event stream is UTF-8 bytes: a lone surrogate cannot be in one.
            data=st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\r\0"), max_size=20),
            event=st.none() | st.sampled_from(["error", "message", "thread.run"]),
        ),
        max_size=6,
    ),
    st.integers(min_value=1, max_value=9),
)
def test_what_the_encoder_writes_openais_decoder_reads_back(events: list[ServerSentEvent], size: int) -> None:
    raw = b"".join(encode_event(event) for event in events)
    assert [(e.event, e.data) for e in decode_in_chunks(raw, size)] == [(e.event, e.data) for e in events]
    assert [(e, d) for e, d, _ in openai_decode(raw, size)] == [(e.event, e.data) for e in events]


def chat_chunk(
    delta: dict[str, Any], finish: str | None = None, index: int = 0, **extra: Any
) -> ServerSentEvent:
    chunk = {
        "id": "c1",
        "object": "chat.completion.chunk",
        "created": 5,
        "model": "m",
        "choices": [
            {"index": index, "delta": delta, "logprobs": extra.pop("logprobs", None), "finish_reason": finish}
        ],
        **extra,
    }
    return ServerSentEvent(orjson.dumps(chunk).decode())


DONE = ServerSentEvent("[DONE]")
TOOL_STREAM = [
    chat_chunk({"role": "assistant", "content": None}),
    chat_chunk(
        {
            "tool_calls": [
                {"index": 0, "id": "call_1", "type": "function", "function": {"name": "get", "arguments": ""}}
            ]
        }
    ),
    chat_chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]}),
    chat_chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Oslo"}'}}]}),
    chat_chunk({}, "tool_calls"),
    DONE,
]


def assembled(events: list[ServerSentEvent], route: Any = CHAT, choices: int = 1) -> Assembler:
    assembler = Assembler(route, choices)
    for event in events:
        assembler.add(event)
    return assembler


def test_tool_call_deltas_assemble_into_one_call_with_joined_arguments() -> None:
    assembler = assembled(TOOL_STREAM)
    assert assembler.problem() is None
    [choice] = assembler.completion()["choices"]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    assert choice["message"]["tool_calls"] == [
        {"id": "call_1", "type": "function", "function": {"name": "get", "arguments": '{"city": "Oslo"}'}}
    ]


def test_content_logprobs_usage_and_two_choices_assemble_and_replay_to_the_same_text() -> None:
    probs = [{"token": "Hi", "logprob": -0.5, "bytes": None, "top_logprobs": []}]
    events = [
        chat_chunk({"role": "assistant"}, index=0),
        chat_chunk({"role": "assistant"}, index=1),
        chat_chunk({"content": "Hi"}, index=0, logprobs={"content": probs}),
        chat_chunk({"content": "Yo"}, index=1),
        chat_chunk({"content": " there"}, index=0, logprobs={"content": probs}),
        chat_chunk({}, "stop", index=0),
        chat_chunk({}, "length", index=1),
        ServerSentEvent(
            orjson.dumps(
                {"id": "c1", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4}}
            ).decode()
        ),
        DONE,
    ]
    assembler = assembled(events, choices=2)
    assert assembler.problem() is None
    completion = assembler.completion()
    assert [c["message"]["content"] for c in completion["choices"]] == ["Hi there", "Yo"]
    assert completion["choices"][0]["logprobs"] == {"content": probs + probs}
    assert completion["usage"] == {"prompt_tokens": 3, "completion_tokens": 4}
    assert (completion["id"], completion["created"], completion["object"]) == ("c1", 5, "chat.completion")
    replayed = decode_in_chunks(replay_events(completion, include_usage=True), 7)
    again = assembled(replayed, choices=2)
    assert again.problem() is None
    assert again.completion() == completion
    without_usage = decode_in_chunks(replay_events(completion, include_usage=False), 64)
    assert all("usage" not in orjson.loads(e.data) for e in without_usage if not e.is_done)


def test_a_tool_call_replays_and_reassembles_to_itself() -> None:
    completion = assembled(TOOL_STREAM).completion()
    assert (
        assembled(decode_in_chunks(replay_events(completion, include_usage=False), 11)).completion()
        == completion
    )


def test_text_completions_assemble_and_replay() -> None:
    def text_chunk(text: str, finish: str | None = None) -> ServerSentEvent:
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
        return ServerSentEvent(
            orjson.dumps(
                {"id": "t", "object": "text_completion", "created": 1, "model": "m", "choices": [choice]}
            ).decode()
        )

    completion = assembled(
        [text_chunk("Once"), text_chunk(" upon"), text_chunk("", "length"), DONE], COMPLETIONS
    ).completion()
    assert completion["choices"][0]["text"] == "Once upon"
    assert (
        assembled(
            decode_in_chunks(replay_events(completion, include_usage=False), 5), COMPLETIONS
        ).completion()
        == completion
    )


@pytest.mark.parametrize(
    ("events", "problem"),
    [
        (TOOL_STREAM[:-1], "the stream ended before data: [DONE]"),
        ([chat_chunk({"content": "x"}), DONE], "choice 0 has no finish_reason"),
        (
            [chat_chunk({"content": "x"}), ServerSentEvent('{"error": {"message": "boom"}}'), DONE],
            "an error event",
        ),
        ([ServerSentEvent("{}", event="error"), DONE], "an error event"),
        ([ServerSentEvent("not json"), DONE], "an event that is not JSON"),
        ([chat_chunk({}, "stop", index=1), DONE], "1 choices arrived of 1"),
    ],
)
def test_a_stream_that_is_not_a_whole_answer_says_why(events: list[ServerSentEvent], problem: str) -> None:
    assert assembled(events).problem() == problem
