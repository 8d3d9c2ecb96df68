"""Whose cache an answer is in. By default each credential has its own (an HMAC of it in the key),
the credential goes upstream as it came and is never stored; with UPSTREAM_API_KEY every client
shares one cache and authenticates to predcache instead."""

from __future__ import annotations

import logging
from typing import Any

import openai
import orjson
import pytest
from redis.asyncio import Redis

from service.__main__ import main
from tests.openai.conftest import UPSTREAM_KEY, Client, MakeGateway, Sdk
from tests.support.llama_server import LlamaServer
from tests.support.scripted_upstream import ScriptedUpstream
from tests.test_api import keys_of

pytestmark = pytest.mark.redis

CHAT = "/v1/chat/completions"
ASKED: dict[str, Any] = {
    "model": "tiny",
    "messages": [{"role": "user", "content": "whose answer"}],
    "max_tokens": 8,
    "temperature": 0,
}


async def post(client: Client, authorization: str | None = None) -> Any:
    headers = {"Content-Type": "application/json"}
    if authorization is not None:
        headers["Authorization"] = authorization
    return await client.post(CHAT, data=orjson.dumps(ASKED), headers=headers)


async def test_two_credentials_never_share_an_entry(
    scripted: ScriptedUpstream, make_gateway: MakeGateway, redis: Redis, model_version: str, sdk: Sdk
) -> None:
    client = await make_gateway(scripted.url)
    caches = []
    for key in ("sk-alice", "sk-bob", "sk-alice", "sk-bob"):
        answer = await sdk(client, api_key=key).chat.completions.with_raw_response.create(**ASKED)
        caches.append(answer.headers["X-Cache"])
    assert caches == ["MISS", "MISS", "HIT", "HIT"]
    assert [call.authorization for call in scripted.calls] == ["Bearer sk-alice", "Bearer sk-bob"]
    assert len(await keys_of(redis, model_version)) == 2


async def test_without_a_credential_the_upstreams_401_even_while_anothers_answer_is_cached(
    keyed_llama: LlamaServer, make_gateway: MakeGateway, redis: Redis, model_version: str, sdk: Sdk
) -> None:
    client = await make_gateway(keyed_llama.api_url)
    api = sdk(client, api_key=UPSTREAM_KEY)
    caches = [
        (await api.chat.completions.with_raw_response.create(**ASKED)).headers["X-Cache"] for _ in range(2)
    ]
    assert caches == ["MISS", "HIT"]
    for authorization in (None, "Bearer sk-wrong"):
        refused = await post(client, authorization)
        assert refused.status == 401, authorization
        assert refused.headers["X-Cache"] == "MISS"
    assert len(await keys_of(redis, model_version)) == 1
    with pytest.raises(openai.AuthenticationError):
        await sdk(client, api_key="sk-wrong").chat.completions.create(**ASKED)


async def test_the_credential_is_never_written_to_redis_or_the_log(
    scripted: ScriptedUpstream,
    make_gateway: MakeGateway,
    redis: Redis,
    model_version: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    credential = "sk-very-secret-credential-1234"
    client = await make_gateway(scripted.url)
    assert (await post(client, f"Bearer {credential}")).status == 200
    assert (await post(client, f"Bearer {credential}")).headers["X-Cache"] == "HIT"
    stored = [await redis.get(key) or b"" for key in await keys_of(redis, model_version)]
    assert stored
    assert not any(credential.encode() in value for value in stored)
    assert credential not in caplog.text


async def test_with_upstream_api_key_every_client_shares_one_cache_and_predcaches_key_goes_up(
    keyed_llama: LlamaServer, make_gateway: MakeGateway, redis: Redis, model_version: str
) -> None:
    client = await make_gateway(keyed_llama.api_url, upstream_api_key=UPSTREAM_KEY)
    before = keyed_llama.requests(CHAT)
    caches = [(await post(client, auth)).headers["X-Cache"] for auth in (None, "Bearer sk-a", "Bearer sk-b")]
    assert caches == ["MISS", "HIT", "HIT"]
    assert keyed_llama.requests(CHAT) - before == 1
    assert len(await keys_of(redis, model_version)) == 1


async def test_gateway_api_keys_admit_only_their_bearers(
    scripted: ScriptedUpstream, make_gateway: MakeGateway, sdk: Sdk
) -> None:
    client = await make_gateway(scripted.url, upstream_api_key="sk-predcache", gateway_api_keys=("t1", "t2"))
    for authorization in (None, "Bearer t3", "Basic t1", "Bearer "):
        refused = await post(client, authorization)
        assert refused.status == 401
        assert refused.headers["WWW-Authenticate"].startswith("Bearer")  # RFC 6750, 3
        error = orjson.loads(await refused.read())["error"]
        assert (error["type"], error["code"]) == ("authentication_error", "invalid_api_key")
    assert scripted.calls == []
    assert (await post(client, "Bearer t1")).headers["X-Cache"] == "MISS"
    assert (await post(client, "Bearer t2")).headers["X-Cache"] == "HIT"
    assert [call.authorization for call in scripted.calls] == ["Bearer sk-predcache"]
    with pytest.raises(openai.AuthenticationError):
        await sdk(client, api_key="t3").models.list()
    assert (await sdk(client, api_key="t2").models.list()).data[0].id == "scripted"


async def test_an_open_shared_cache_is_said_loudly_at_startup(
    scripted: ScriptedUpstream, make_gateway: MakeGateway, caplog: pytest.LogCaptureFixture
) -> None:
    await make_gateway(scripted.url, upstream_api_key="sk-predcache")
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "OPEN" in r.getMessage()]
    assert len(warnings) == 1
    assert "sk-predcache" not in caplog.text


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"MODEL": "openai+http://127.0.0.1:1/v1", "CACHE_SCOPE_SECRET": "s"}, "MODEL_VERSION"),
        ({"MODEL": "openai+http://127.0.0.1:1/v1", "MODEL_VERSION": "v"}, "CACHE_SCOPE_SECRET"),
        ({"MODEL": "openai+ftp://127.0.0.1/v1", "MODEL_VERSION": "v"}, "MODEL"),
        (
            {"MODEL": "openai+http://127.0.0.1:1/v1", "MODEL_VERSION": "v", "GATEWAY_API_KEYS": "a"},
            "GATEWAY_API_KEYS",
        ),
        (
            {
                "MODEL": "openai+http://127.0.0.1:1/v1",
                "MODEL_VERSION": "v",
                "UPSTREAM_API_KEY": "k",
                "GATEWAY_API_KEYS": "a,,b",
            },
            "GATEWAY_API_KEYS",
        ),
    ],
)
def test_a_gateway_setting_missing_or_wrong_is_one_line_and_exit_2(
    environ: dict[str, str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([], environ) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"predcache: error: {named}:")
