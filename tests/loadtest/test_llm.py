"""LLM mode's pure parts: prompt files into chat bodies, server-sent events however the bytes are split,
and what one answer says about its tokens."""

from __future__ import annotations

import itertools
from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from loadtest.llm import Answer, PromptsError, SSEDecoder, load_prompts

STREAM = (
    b'data: {"choices":[{"index":0,"delta":{"role":"assistant"}}]}\n\n'
    b": a comment\n\n"
    b'data: {"choices":[{"index":0,"delta":{"content":"Hel"}}]}\r\n\r\n'
    b'event: message\ndata: {"choices":[{"index":0,"delta":{"content":"lo"}}]}\n\n'
    b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\r\r'
    b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}\n\n'
    b"data: [DONE]\n\n"
)


def test_string_and_object_lines_make_bodies(tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        '"Say hi"\n\n{"model": "m2", "messages": [{"role": "user", "content": "x"}], "seed": 1}\n'
    )
    streamed = [orjson.loads(b) for b in load_prompts(prompts, model="m1", stream=True, max_tokens=16)]
    assert streamed == [
        {
            "model": "m1",
            "messages": [{"role": "user", "content": "Say hi"}],
            "max_tokens": 16,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
        {
            "model": "m2",
            "messages": [{"role": "user", "content": "x"}],
            "seed": 1,
            "max_tokens": 16,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    ]
    plain = [orjson.loads(b) for b in load_prompts(prompts, model="m1", stream=False, max_tokens=None)]
    assert plain[0] == {"model": "m1", "messages": [{"role": "user", "content": "Say hi"}], "stream": False}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "holds no prompts"),
        ("[1, 2]\n", "line 1: neither a prompt string"),
        ('"a"\n{x\n', "line 2: not JSON"),
    ],
)
def test_bad_prompt_files_are_named(tmp_path: Path, text: str, message: str) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(text)
    with pytest.raises(PromptsError, match=message):
        load_prompts(prompts, model="m", stream=False, max_tokens=None)


@given(st.lists(st.integers(min_value=1, max_value=len(STREAM) - 1), max_size=12))
def test_events_are_the_same_however_the_bytes_arrive(cuts: list[int]) -> None:
    bounds = [0, *sorted(set(cuts)), len(STREAM)]
    decoder = SSEDecoder()
    events = [event for a, b in itertools.pairwise(bounds) for event in decoder.feed(STREAM[a:b])]
    assert len(events) == 6
    assert events[-1] == "[DONE]"
    assert orjson.loads(events[1])["choices"][0]["delta"]["content"] == "Hel"


def test_a_streamed_answer_times_its_tokens_and_takes_the_servers_count() -> None:
    answer = Answer()
    for at_s, event in enumerate(SSEDecoder().feed(STREAM)):
        answer.on_event(event, at_s / 10)
    assert answer.done
    assert answer.error is None
    assert answer.ttft_s == 0.1  # the role chunk is not a token
    assert answer.inter_token_s() == [pytest.approx(0.1)]
    assert answer.output_tokens == 2


def test_without_usage_tokens_are_the_token_events_and_an_error_event_is_an_error() -> None:
    answer = Answer()
    answer.on_event('{"choices":[{"index":0,"text":"a"}]}', 0.5)
    answer.on_event('{"choices":[{"index":0,"text":"b"}]}', 0.7)
    assert (answer.output_tokens, answer.done) == (2, False)
    answer.on_event('{"error":{"message":"upstream went away"}}', 0.8)
    assert answer.error == "error event"


def test_a_json_answer_has_every_token_at_once() -> None:
    answer = Answer()
    answer.on_json(b'{"choices":[{"message":{"content":"hi"}}],"usage":{"completion_tokens":5}}', 0.25)
    assert (answer.ttft_s, answer.inter_token_s(), answer.output_tokens, answer.done) == (0.25, [], 5, True)
    broken = Answer()
    broken.on_json(b'{"detail": "nope"}', 0.1)
    assert broken.error == "bad response"
