"""What the gateway refuses and how it says so (OpenAI's error shape, status 4xx, nothing asked
upstream), Cache-Control per request, and the cache headers on every /v1/ answer."""

from __future__ import annotations

from typing import Any

import openai
import orjson
import pytest

from tests.openai.conftest import Client, MakeGateway, Sdk
from tests.support.scripted_upstream import ScriptedUpstream

pytestmark = pytest.mark.redis

CHAT = "/v1/chat/completions"
HELLO: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "hello"}], "temperature": 0}


async def post(client: Client, path: str, body: bytes | dict[str, Any], **headers: str) -> Any:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    return await client.post(path, data=data, headers={"Content-Type": "application/json", **headers})


def assert_openai_error(payload: bytes, *, type_: str) -> dict[str, Any]:
    error = orjson.loads(payload)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == type_
    assert error["message"]
    return dict(error)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"not json", None),
        (b"[1, 2]", None),
        (b'{"model": "m"}', "messages"),
        (b'{"model": "m", "messages": []}', "messages"),
        (b'{"model": "m", "messages": "hello"}', "messages"),
        (b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}', "stream"),
        (
            b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "stream_options": 1}',
            "stream_options",
        ),
        (
            b'{"model": "m", "messages": [{"role": "user", "content": "x"}],'
            b' "stream_options": {"include_usage": 1}}',
            "stream_options.include_usage",
        ),
        (b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 0}', "n"),
        (b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "n": true}', "n"),
        (
            b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"}',
            "temperature",
        ),
        (b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "seed": 1.5}', "seed"),
        (b"[" * 100 + b"]" * 100, None),
    ],
)
async def test_a_bad_body_is_a_400_in_openai_shape_and_asks_nothing_upstream(
    scripted: ScriptedUpstream, make_gateway: MakeGateway, body: bytes, param: str | None
) -> None:
    client = await make_gateway(scripted.url)
    response = await post(client, CHAT, body)
    assert response.status == 400
    error = assert_openai_error(await response.read(), type_="invalid_request_error")
    assert error["param"] == param
    assert response.headers["X-Cache"] == "BYPASS"
    assert scripted.calls == []


async def test_embeddings_do_not_stream_and_need_an_input(
    scripted: ScriptedUpstream, make_gateway: MakeGateway
) -> None:
    client = await make_gateway(scripted.url)
    streamed = await post(client, "/v1/embeddings", {"model": "m", "input": "x", "stream": True})
    assert streamed.status == 400
    assert assert_openai_error(await streamed.read(), type_="invalid_request_error")["param"] == "stream"
    missing = await post(client, "/v1/embeddings", {"model": "m"})
    assert missing.status == 400
    assert scripted.calls == []


async def test_the_sdk_raises_bad_request_for_a_refused_body(
    scripted: ScriptedUpstream, make_gateway: MakeGateway, sdk: Sdk
) -> None:
    client = await make_gateway(scripted.url)
    with pytest.raises(openai.BadRequestError) as raised:
        await sdk(client).chat.completions.create(model="m", messages=[], max_tokens=4)
    assert raised.value.param == "messages"


async def test_an_unknown_v1_path_is_a_404_and_a_wrong_method_a_405(
    scripted: ScriptedUpstream, make_gateway: MakeGateway, sdk: Sdk
) -> None:
    client = await make_gateway(scripted.url)
    for method, path in (("POST", "/v1/responses"), ("GET", "/v1/nope/deeper"), ("DELETE", "/v1/models/x")):
        response = await client.request(method, path)
        assert response.status == 404
        assert (
            assert_openai_error(await response.read(), type_="invalid_request_error")["code"] == "unknown_url"
        )
        assert response.headers["X-Cache"] == "BYPASS"
    wrong = await client.get(CHAT)
    assert wrong.status == 405
    assert wrong.headers["Allow"] == "POST"
    assert_openai_error(await wrong.read(), type_="invalid_request_error")
    with pytest.raises(openai.NotFoundError):
        await sdk(client).responses.create(model="m", input="x")


async def test_predict_says_where_the_api_is(scripted: ScriptedUpstream, make_gateway: MakeGateway) -> None:
    client = await make_gateway(scripted.url)
    for method, path in (("GET", "/predict?pair=ETH-EUR"), ("POST", "/predict"), ("POST", "/predict/batch")):
        response = await client.request(method, path, data=b"{}")
        assert response.status == 404
        assert "/v1/chat/completions" in orjson.loads(await response.read())["error"]["message"]
    assert (await client.get("/readyz")).status == 200
    assert (await client.get("/metrics")).status == 200


async def test_cache_control_no_cache_no_store_and_max_age(
    scripted: ScriptedUpstream, make_gateway: MakeGateway
) -> None:
    """no-store: asked upstream and not stored; no-cache: asked upstream and stored; max-age=60
    accepts the entry no-cache stored."""
    client = await make_gateway(scripted.url)
    bypass = await post(client, CHAT, HELLO, **{"Cache-Control": "no-store"})
    assert (bypass.status, bypass.headers["X-Cache"]) == (200, "BYPASS")
    assert bypass.headers["Cache-Status"] == "predcache; fwd=bypass"
    miss = await post(client, CHAT, HELLO)
    assert miss.headers["X-Cache"] == "MISS"  # no-store stored nothing
    assert (await post(client, CHAT, HELLO)).headers["X-Cache"] == "HIT"
    forced = await post(client, CHAT, HELLO, **{"Cache-Control": "no-cache"})
    assert forced.headers["X-Cache"] == "MISS"
    assert forced.headers["Cache-Status"] == "predcache; fwd=request; stored"
    fresh = await post(client, CHAT, HELLO, **{"Cache-Control": "max-age=60"})
    assert fresh.headers["X-Cache"] == "HIT"
    assert orjson.loads(await fresh.read())["id"] == orjson.loads(await forced.read())["id"]
    assert scripted.count() == 3


@pytest.mark.parametrize("header", ["max-stale=5", "only-if-cached", "max-age=soon", "no-cache, min-fresh=3"])
async def test_a_cache_control_the_gateway_cannot_honor_is_a_400(
    scripted: ScriptedUpstream, make_gateway: MakeGateway, header: str
) -> None:
    client = await make_gateway(scripted.url)
    response = await post(client, CHAT, HELLO, **{"Cache-Control": header})
    assert response.status == 400
    assert (
        assert_openai_error(await response.read(), type_="invalid_request_error")["param"] == "Cache-Control"
    )
    assert scripted.calls == []


async def test_sampled_requests_are_cached_unless_told_not_to(
    scripted: ScriptedUpstream, make_gateway: MakeGateway, model_version: str
) -> None:
    sampled = {**HELLO, "temperature": 0.8}
    cached = await make_gateway(scripted.url)
    assert [(await post(cached, CHAT, sampled)).headers["X-Cache"] for _ in range(2)] == ["MISS", "HIT"]
    uncached = await make_gateway(scripted.url, cache_sampled=False, model_version=model_version + "-b")
    assert [(await post(uncached, CHAT, sampled)).headers["X-Cache"] for _ in range(2)] == ["BYPASS"] * 2
    # A seed makes the draw repeatable: cached again.
    seeded = {**sampled, "seed": 3}
    assert [(await post(uncached, CHAT, seeded)).headers["X-Cache"] for _ in range(2)] == ["MISS", "HIT"]
    assert scripted.count() == 4


async def test_a_no_store_stream_is_relayed_and_never_stored(
    scripted: ScriptedUpstream, make_gateway: MakeGateway, sdk: Sdk
) -> None:
    client = await make_gateway(scripted.url)
    api = sdk(client)
    for _ in range(2):
        async with api.chat.completions.with_streaming_response.create(
            stream=True, extra_headers={"Cache-Control": "no-store"}, **HELLO
        ) as raw:
            assert raw.headers["X-Cache"] == "BYPASS"
            text = "".join([chunk.choices[0].delta.content or "" async for chunk in await raw.parse()])
        assert text == "Hello, world!"
    assert (await post(client, CHAT, HELLO)).headers["X-Cache"] == "MISS"
    assert scripted.count() == 3


async def test_delete_cache_forgets_every_answer_of_the_gateway(
    scripted: ScriptedUpstream, make_gateway: MakeGateway
) -> None:
    client = await make_gateway(scripted.url, admin_token="admin")
    assert [(await post(client, CHAT, HELLO)).headers["X-Cache"] for _ in range(2)] == ["MISS", "HIT"]
    forgot = await client.delete("/cache", headers={"Authorization": "Bearer admin"})
    assert forgot.status == 200
    assert (await post(client, CHAT, HELLO)).headers["X-Cache"] == "MISS"
    assert (await client.delete("/cache/ETH-EUR", headers={"Authorization": "Bearer admin"})).status == 404
    assert scripted.count() == 2


async def test_a_body_past_max_body_bytes_is_a_413_in_openai_shape(
    scripted: ScriptedUpstream, make_gateway: MakeGateway
) -> None:
    client = await make_gateway(scripted.url, max_body_bytes=1024)
    long = {**HELLO, "messages": [{"role": "user", "content": "x" * 2000}]}
    response = await post(client, CHAT, long)
    assert response.status == 413
    assert_openai_error(await response.read(), type_="invalid_request_error")
    assert scripted.calls == []
