"""predcache in front of llama.cpp's server, called with the official openai SDK: a completion is a
MISS, the identical request a HIT with the same content and one upstream request in all, whether it
is asked for as JSON or as a stream, and whatever the spelling of its body."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from openai.types.chat import ChatCompletionMessageParam
from redis.asyncio import Redis

from tests.openai.conftest import Client, MakeGateway, Sdk, SyncSdk
from tests.support.llama_server import LlamaServer
from tests.test_api import keys_of

pytestmark = pytest.mark.redis

CHAT = "/v1/chat/completions"


def messages(text: str) -> list[ChatCompletionMessageParam]:
    return [{"role": "user", "content": text}]


async def post(client: Client, path: str, body: bytes | dict[str, Any], **headers: str) -> Any:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    return await client.post(path, data=data, headers={"Content-Type": "application/json", **headers})


async def test_a_chat_completion_is_a_miss_then_a_hit_with_one_upstream_request(
    llama: LlamaServer, make_gateway: MakeGateway, redis: Redis, model_version: str, sdk: Sdk
) -> None:
    """The async SDK, JSON: MISS, then HIT with the same content; the upstream saw one request."""
    client = await make_gateway(llama.api_url)
    before = llama.requests(CHAT)
    api = sdk(client)
    asked: dict[str, Any] = {"model": "tiny", "messages": messages("miss then hit"), "max_tokens": 16}
    first = await api.chat.completions.with_raw_response.create(temperature=0, **asked)
    second = await api.chat.completions.with_raw_response.create(temperature=0, **asked)
    assert (first.headers["X-Cache"], second.headers["X-Cache"]) == ("MISS", "HIT")
    assert second.headers["Cache-Status"].startswith("predcache; hit; ttl=")
    assert int(second.headers["Age"]) >= 0
    one, two = first.parse(), second.parse()
    assert one.choices[0].message.content
    assert two.choices[0].message.content == one.choices[0].message.content
    # A hit carries the stored completion's id and created: it is that completion.
    assert (two.id, two.created) == (one.id, one.created)
    assert llama.requests(CHAT) - before == 1
    assert len(await keys_of(redis, model_version)) == 1


async def test_a_streamed_request_is_a_hit_whose_text_is_the_stored_completion(
    llama: LlamaServer, make_gateway: MakeGateway, sync_sdk: SyncSdk, sdk: Sdk
) -> None:
    """JSON first; then the same request with stream=True, from the sync SDK and the async one, is
    a HIT whose accumulated text is exactly the JSON answer's."""
    client = await make_gateway(llama.api_url)
    before = llama.requests(CHAT)
    asked: dict[str, Any] = {
        "model": "tiny",
        "messages": messages("stream hit"),
        "max_tokens": 16,
        "temperature": 0,
    }
    answer = await sdk(client).chat.completions.create(**asked)

    def sync_stream() -> tuple[str, str, list[str | None]]:
        with sync_sdk(client).chat.completions.with_streaming_response.create(stream=True, **asked) as raw:
            chunks = list(raw.parse())
            return (
                raw.headers["X-Cache"],
                raw.headers["Content-Type"],
                [c.choices[0].delta.content for c in chunks],
            )

    cache, content_type, deltas = await asyncio.to_thread(sync_stream)
    assert (cache, content_type) == ("HIT", "text/event-stream")
    assert "".join(d or "" for d in deltas) == answer.choices[0].message.content
    stream = await sdk(client).chat.completions.create(stream=True, **asked)
    chunks = [chunk async for chunk in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == answer.choices[0].finish_reason
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == answer.choices[0].message.content
    assert llama.requests(CHAT) - before == 1


async def test_a_streamed_miss_is_relayed_then_stored_for_json_and_stream_alike(
    llama: LlamaServer, make_gateway: MakeGateway, sdk: Sdk
) -> None:
    """stream=True first (a MISS relayed as it is generated, headers included), then JSON and a
    stream with include_usage: both HITs with the text the stream accumulated."""
    client = await make_gateway(llama.api_url)
    before = llama.requests(CHAT)
    asked: dict[str, Any] = {
        "model": "tiny",
        "messages": messages("stream miss"),
        "max_tokens": 24,
        "seed": 7,
    }
    async with sdk(client).chat.completions.with_streaming_response.create(stream=True, **asked) as raw:
        assert raw.headers["X-Cache"] == "MISS"
        assert raw.headers["Cache-Status"] == "predcache; fwd=uri-miss"
        assert raw.headers["Age"] == "0"
        streamed = "".join([c.choices[0].delta.content or "" async for c in await raw.parse()])
    assert streamed
    answer = await sdk(client).chat.completions.with_raw_response.create(**asked)
    assert answer.headers["X-Cache"] == "HIT"
    assert answer.parse().choices[0].message.content == streamed
    replay = await sdk(client).chat.completions.create(
        stream=True, stream_options={"include_usage": True}, **asked
    )
    chunks = [chunk async for chunk in replay]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == streamed
    # llama.cpp sends no usage in a stream, so none is known: no usage chunk, and no fake one.
    assert all(chunk.usage is None for chunk in chunks)
    assert llama.requests(CHAT) - before == 1


async def test_key_order_whitespace_user_and_stream_fields_give_one_entry(
    llama: LlamaServer, make_gateway: MakeGateway, redis: Redis, model_version: str
) -> None:
    """Four spellings of one request (key order, whitespace, 0 as 0.0, another `user`, `store` and
    `metadata`): one upstream request, one entry, one answer."""
    client = await make_gateway(llama.api_url)
    before = llama.requests(CHAT)
    spellings = [
        b'{"model": "tiny", "messages": [{"role": "user", "content": "spell"}], "max_tokens": 8,'
        b' "temperature": 0}',
        b'{"temperature":0.0,"max_tokens":8,"messages":[{"content":"spell","role":"user"}],"model":"tiny"}',
        b'{ "messages" : [ { "role" : "user" , "content" : "spell" } ] ,\n "model" : "tiny" ,'
        b' "max_tokens" : 8.0 , "temperature" : 0 , "user" : "someone-else" }',
        b'{"model":"tiny","messages":[{"role":"user","content":"spell"}],"max_tokens":8,"temperature":0,'
        b'"store":true,"metadata":{"run":"x"},"user":"u2","stream":false}',
    ]
    bodies = []
    for spelling in spellings:
        response = await post(client, CHAT, spelling)
        assert response.status == 200
        bodies.append(await response.read())
    assert len(set(bodies)) == 1
    assert llama.requests(CHAT) - before == 1
    assert len(await keys_of(redis, model_version)) == 1


async def test_text_completions_stream_and_json_share_an_entry(
    llama: LlamaServer, make_gateway: MakeGateway, sdk: Sdk
) -> None:
    client = await make_gateway(llama.api_url)
    before = llama.requests("/v1/completions")
    api = sdk(client)
    streamed = "".join(
        [
            chunk.choices[0].text
            async for chunk in await api.completions.create(
                model="tiny", prompt="Once upon", max_tokens=12, temperature=0, stream=True
            )
        ]
    )
    answer = await api.completions.with_raw_response.create(
        model="tiny", prompt="Once upon", max_tokens=12, temperature=0
    )
    assert answer.headers["X-Cache"] == "HIT"
    assert answer.parse().choices[0].text == streamed
    assert llama.requests("/v1/completions") - before == 1


async def test_embeddings_are_cached_like_a_completion(
    llama: LlamaServer, make_gateway: MakeGateway, sdk: Sdk
) -> None:
    client = await make_gateway(llama.api_url)
    before = llama.requests("/v1/embeddings")
    api = sdk(client)
    first = await api.embeddings.with_raw_response.create(
        model="tiny", input="embed me", encoding_format="float"
    )
    second = await api.embeddings.with_raw_response.create(
        model="tiny", input="embed me", encoding_format="float"
    )
    assert (first.headers["X-Cache"], second.headers["X-Cache"]) == ("MISS", "HIT")
    assert second.parse().data[0].embedding == first.parse().data[0].embedding
    assert llama.requests("/v1/embeddings") - before == 1


async def test_models_pass_through(llama: LlamaServer, make_gateway: MakeGateway, sdk: Sdk) -> None:
    client = await make_gateway(llama.api_url)
    models = await sdk(client).models.list()
    assert [model.id for model in models.data] == [str(llama.model)]
