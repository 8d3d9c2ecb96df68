"""Identical requests at once share one generation, across replicas too, streaming or not; and a
client that hangs up never cuts the generation the others share."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from tests.openai.conftest import API_KEY, Client, MakeGateway, Sdk
from tests.support.llama_server import LlamaServer
from tests.support.scripted_upstream import Script, ScriptedUpstream
from tests.test_api import keys_of

pytestmark = pytest.mark.redis

CHAT = "/v1/chat/completions"


async def test_50_identical_requests_half_streaming_over_3_replicas_make_one_generation(
    llama: LlamaServer, make_gateway: MakeGateway, redis_url: str, sdk: Sdk
) -> None:
    """Three apps on one Redis, each with its own Redis client; 50 requests at once spread over
    them, every other one streaming: llama.cpp saw one request, and all 50 texts are the same."""
    replicas = [await make_gateway(llama.api_url, redis_url=redis_url) for _ in range(3)]
    clients = [sdk(replica) for replica in replicas]
    asked: dict[str, Any] = {
        "model": "tiny",
        "messages": [{"role": "user", "content": "fifty at once"}],
        "max_tokens": 160,
        "temperature": 0,
    }
    before = llama.requests(CHAT)

    async def one(i: int) -> str:
        api = clients[i % 3]
        if i % 2:
            stream = await api.chat.completions.create(stream=True, **asked)
            return "".join([chunk.choices[0].delta.content or "" async for chunk in stream])
        answer = await api.chat.completions.create(**asked)
        return answer.choices[0].message.content or ""

    texts = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(50))), timeout=60)
    assert len(texts) == 50
    assert len(set(texts)) == 1
    assert texts[0]
    assert llama.requests(CHAT) - before == 1


async def read_first_chunk_and_hang_up(client: Client, body: bytes) -> bytes:
    """A streaming client (with the SDK clients' credential: the same cache scope) that reads the
    first event and goes away."""
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {API_KEY}"}
    response = await client.post(CHAT, data=body, headers=headers)
    first = await response.content.readuntil(b"\n\n")
    response.close()
    return first


async def test_a_client_that_hangs_up_does_not_cut_the_generation_it_shares(
    scripted: ScriptedUpstream, make_gateway: MakeGateway, redis: Redis, model_version: str, sdk: Sdk
) -> None:
    """The streaming client that started a generation leaves after its first event; a JSON request
    and a streaming one that joined it still get the whole answer; it is stored; one upstream call."""
    client = await make_gateway(scripted.url)
    scripted.script = Script(words=("one", " two", " three", " four"), event_delay_s=0.1)
    asked: dict[str, Any] = {
        "model": "m",
        "messages": [{"role": "user", "content": "stay"}],
        "temperature": 0,
    }
    body = orjson.dumps({**asked, "stream": True})
    leaving = asyncio.create_task(read_first_chunk_and_hang_up(client, body))
    await asyncio.sleep(0.05)
    api = sdk(client)

    async def streamed() -> str:
        stream = await api.chat.completions.create(stream=True, **asked)
        return "".join([chunk.choices[0].delta.content or "" async for chunk in stream])

    answer, text, first = await asyncio.gather(api.chat.completions.create(**asked), streamed(), leaving)
    assert first.startswith(b"data: ")
    assert answer.choices[0].message.content == text == "one two three four"
    assert len(await keys_of(redis, model_version)) == 1
    assert scripted.count() == 1


async def test_a_generation_every_listener_left_still_completes_and_is_stored(
    scripted: ScriptedUpstream, make_gateway: MakeGateway, sdk: Sdk
) -> None:
    client = await make_gateway(scripted.url)
    scripted.script = Script(event_delay_s=0.05)
    asked: dict[str, Any] = {
        "model": "m",
        "messages": [{"role": "user", "content": "left"}],
        "temperature": 0,
    }
    await read_first_chunk_and_hang_up(client, orjson.dumps({**asked, "stream": True}))
    for _ in range(100):  # the generation ends about 0.25 s later
        answer = await sdk(client).chat.completions.with_raw_response.create(**asked)
        if answer.headers["X-Cache"] == "HIT":
            break
        await asyncio.sleep(0.05)
    assert answer.headers["X-Cache"] == "HIT"
    assert answer.parse().choices[0].message.content == "Hello, world!"
    assert scripted.count() == 1
