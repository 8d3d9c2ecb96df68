"""One realistic run: SmolLM2-135M-Instruct, a real chat model, behind predcache; the docs'
walkthrough in a test."""

from __future__ import annotations

from typing import Any

import pytest

from tests.openai.conftest import MakeGateway, Sdk
from tests.support.llama_server import LlamaServer

pytestmark = [pytest.mark.redis, pytest.mark.slow]


async def test_a_real_chat_model_streams_a_miss_then_answers_the_same_words_from_the_cache(
    smollm2_server: LlamaServer, make_gateway: MakeGateway, sdk: Sdk
) -> None:
    client = await make_gateway(smollm2_server.api_url)
    api = sdk(client)
    before = smollm2_server.requests("/v1/chat/completions")
    asked: dict[str, Any] = {
        "model": "smollm2",
        "messages": [{"role": "user", "content": "Name three colours of the rainbow."}],
        "max_tokens": 40,
        "temperature": 0,
    }
    async with api.chat.completions.with_streaming_response.create(stream=True, **asked) as raw:
        assert raw.headers["X-Cache"] == "MISS"
        chunks = [chunk async for chunk in await raw.parse()]
    streamed = "".join(chunk.choices[0].delta.content or "" for chunk in chunks)
    assert len(chunks) > 5  # relayed token by token, not in one piece
    assert len(streamed.split()) >= 3  # words, from a model that speaks English
    answer = await api.chat.completions.with_raw_response.create(**asked)
    assert answer.headers["X-Cache"] == "HIT"
    assert answer.parse().choices[0].message.content == streamed
    assert smollm2_server.requests("/v1/chat/completions") - before == 1
