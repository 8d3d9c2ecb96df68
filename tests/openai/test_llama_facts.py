"""What llama.cpp's server does that the gateway and its tests rely on, checked with the openai SDK
directly against it (no predcache): if a llama-cpp-python upgrade changes one, this says which."""

from __future__ import annotations

import openai

from tests.support.llama_server import LlamaServer

MESSAGES: list[openai.types.chat.ChatCompletionMessageParam] = [{"role": "user", "content": "Say hi"}]


def test_temperature_zero_repeats_an_answer_with_a_new_id_each_time(llama: LlamaServer) -> None:
    client = openai.OpenAI(base_url=llama.api_url, api_key="unused", max_retries=0)
    first, second = (
        client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=12, temperature=0)
        for _ in range(2)
    )
    assert first.choices[0].message.content
    assert first.choices[0].message.content == second.choices[0].message.content
    assert first.id != second.id
    assert first.system_fingerprint is None
    assert first.usage is not None
    assert first.usage.completion_tokens > 0


def test_a_stream_has_no_usage_chunk_even_when_asked(llama: LlamaServer) -> None:
    client = openai.OpenAI(base_url=llama.api_url, api_key="unused", max_retries=0)
    chunks = list(
        client.chat.completions.create(
            model="tiny",
            messages=MESSAGES,
            max_tokens=12,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert all(chunk.usage is None for chunk in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason in ("length", "stop")
    assert len({chunk.id for chunk in chunks}) == 1
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks)
    answer = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=12, temperature=0)
    assert text == answer.choices[0].message.content
