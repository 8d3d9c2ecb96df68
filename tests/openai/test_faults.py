"""What a real upstream will not do on demand, from the scripted one: a stream cut halfway, an error
event, a hang before the first token, a 429, a 401. The client sees each as it came; nothing of it is
stored, and the next identical request goes upstream again."""

from __future__ import annotations

import time
from typing import Any

import openai
import pytest
from redis.asyncio import Redis

from tests.openai.conftest import MakeGateway, Sdk
from tests.support.redis_server import free_port
from tests.support.scripted_upstream import Script, ScriptedUpstream
from tests.test_api import keys_of

pytestmark = pytest.mark.redis

ASKED: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "fault"}], "temperature": 0}


async def collect(stream: openai.AsyncStream[Any]) -> str:
    return "".join([chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices])


@pytest.mark.parametrize(
    ("fault", "raised"), [("cut", openai.APIConnectionError), ("error_event", openai.APIError)]
)
async def test_a_stream_that_breaks_reaches_the_client_broken_and_is_never_stored(
    scripted: ScriptedUpstream,
    make_gateway: MakeGateway,
    redis: Redis,
    model_version: str,
    fault: Any,
    raised: type[Exception],
    sdk: Sdk,
) -> None:
    """The client reads the chunks that came, then the SDK raises (a broken connection for a cut,
    APIError for an error event); nothing is stored; the next request goes upstream and, the fault
    gone, is whole and then cached."""
    client = await make_gateway(scripted.url)
    scripted.script = Script(fault=fault, cut_after=2)
    received: list[str] = []

    async def read() -> None:
        async for chunk in await sdk(client).chat.completions.create(stream=True, **ASKED):
            received.append(chunk.choices[0].delta.content or "")

    with pytest.raises(raised):
        await read()
    assert "".join(received) == "Hello,"  # the two chunks before the fault, as they came
    assert await keys_of(redis, model_version) == []
    # A JSON request now is not served the broken answer: it goes upstream.
    scripted.script = Script()
    answer = await sdk(client).chat.completions.with_raw_response.create(**ASKED)
    assert answer.headers["X-Cache"] == "MISS"
    assert answer.parse().choices[0].message.content == "Hello, world!"
    assert scripted.count() == 2


async def test_a_stream_cut_before_its_end_is_not_stored_for_json_waiters_either(
    scripted: ScriptedUpstream, make_gateway: MakeGateway, redis: Redis, model_version: str, sdk: Sdk
) -> None:
    """A streamed generation cut halfway, while a JSON request for it waits: the JSON request gets
    an error (503, OpenAI's shape), not half an answer."""
    client = await make_gateway(scripted.url)
    scripted.script = Script(fault="cut", cut_after=3, event_delay_s=0.05)
    api = sdk(client)
    stream = await api.chat.completions.create(stream=True, **ASKED)
    with pytest.raises(openai.InternalServerError) as waited:
        await api.chat.completions.create(**ASKED)
    assert waited.value.status_code == 503
    with pytest.raises(openai.APIConnectionError):
        await collect(stream)
    assert await keys_of(redis, model_version) == []
    assert scripted.count() == 1


async def test_a_hang_before_the_first_token_is_a_504_after_the_model_timeout(
    scripted: ScriptedUpstream, make_gateway: MakeGateway, redis: Redis, model_version: str, sdk: Sdk
) -> None:
    client = await make_gateway(scripted.url, model_timeout_s=0.5)
    scripted.script = Script(fault="hang")
    started = time.monotonic()
    for stream in (True, False):
        with pytest.raises(openai.APIStatusError) as raised:
            await sdk(client).chat.completions.create(stream=stream, **ASKED)
        assert raised.value.status_code == 504
        assert raised.value.body is not None
    assert time.monotonic() - started < 5
    assert await keys_of(redis, model_version) == []


async def test_a_429_reaches_the_client_with_its_retry_after_and_is_never_stored(
    scripted: ScriptedUpstream, make_gateway: MakeGateway, redis: Redis, model_version: str, sdk: Sdk
) -> None:
    client = await make_gateway(scripted.url)
    limited = {"error": {"message": "slow down", "type": "rate_limit_error", "param": None, "code": None}}
    scripted.script = Script(fault="status", status=429, body=limited, headers={"Retry-After": "7"})
    for stream in (False, True):
        with pytest.raises(openai.RateLimitError) as raised:
            await sdk(client).chat.completions.create(stream=stream, **ASKED)
        assert raised.value.response.headers["Retry-After"] == "7"
        assert raised.value.body == limited["error"]
    assert await keys_of(redis, model_version) == []
    scripted.script = Script()
    assert (await sdk(client).chat.completions.create(**ASKED)).choices[0].message.content == "Hello, world!"
    assert scripted.count() == 3


async def test_an_upstream_401_passes_through_as_it_came(
    scripted: ScriptedUpstream, make_gateway: MakeGateway, sdk: Sdk
) -> None:
    client = await make_gateway(scripted.url)
    refused = {
        "error": {
            "message": "bad key",
            "type": "invalid_request_error",
            "param": None,
            "code": "invalid_api_key",
        }
    }
    scripted.script = Script(fault="status", status=401, body=refused)
    with pytest.raises(openai.AuthenticationError) as raised:
        await sdk(client).chat.completions.create(**ASKED)
    assert raised.value.body == refused["error"]
    assert raised.value.response.headers["X-Cache"] == "MISS"


async def test_a_stream_past_the_model_timeout_is_cut_for_the_client(
    scripted: ScriptedUpstream, make_gateway: MakeGateway, redis: Redis, model_version: str, sdk: Sdk
) -> None:
    """Events came, then the generation ran past MODEL_TIMEOUT_SECONDS: the client's stream is cut
    after what came, not ended as if whole."""
    client = await make_gateway(scripted.url, model_timeout_s=0.5)
    scripted.script = Script(event_delay_s=0.2)
    received: list[str] = []

    async def read() -> None:
        async for chunk in await sdk(client).chat.completions.create(stream=True, **ASKED):
            received.append(chunk.choices[0].delta.content or "")

    with pytest.raises(openai.APIConnectionError):
        await read()
    assert 0 < len(received) < 5
    assert await keys_of(redis, model_version) == []


async def test_an_upstream_5xx_is_a_503_in_openai_shape_and_never_stored(
    scripted: ScriptedUpstream, make_gateway: MakeGateway, redis: Redis, model_version: str, sdk: Sdk
) -> None:
    client = await make_gateway(scripted.url)
    scripted.script = Script(fault="status", status=500, body={"detail": "boom"})
    for stream in (False, True):
        with pytest.raises(openai.InternalServerError) as raised:
            await sdk(client).chat.completions.create(stream=stream, **ASKED)
        assert raised.value.status_code == 503
        assert isinstance(raised.value.body, dict)
        assert raised.value.body["type"] == "server_error"
    assert await keys_of(redis, model_version) == []


async def test_an_unreachable_upstream_is_a_503_for_every_route(make_gateway: MakeGateway, sdk: Sdk) -> None:
    client = await make_gateway(f"http://127.0.0.1:{free_port()}/v1")
    api = sdk(client)
    with pytest.raises(openai.InternalServerError) as listed:
        await api.models.list()
    with pytest.raises(openai.InternalServerError) as asked:
        await api.chat.completions.create(stream=True, **ASKED)
    for raised in (listed, asked):
        assert raised.value.status_code == 503
        assert isinstance(raised.value.body, dict)
        assert raised.value.body["code"] == "model_error"
