"""The gateway's real parts: llama.cpp's server on the tiny random-weight model (one per session) and
on SmolLM2, and the scripted upstream for faults."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import openai
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from service.app import create_app
from service.settings.config import Settings
from tests.support.llama_server import LlamaServer
from tests.support.scripted_upstream import ScriptedUpstream
from tests.support.tiny_llama import smollm2, tiny_llama

# The bearer the keyed llama.cpp server wants: a test credential, not a secret.
UPSTREAM_KEY = "sk-upstream-test"


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    return tiny_llama()


@pytest.fixture(scope="session")
def llama(tiny_model: Path) -> Iterator[LlamaServer]:
    """llama.cpp's OpenAI-compatible server on the tiny model, open to every client."""
    with LlamaServer(tiny_model) as server:
        yield server


@pytest.fixture(scope="session")
def keyed_llama(tiny_model: Path) -> Iterator[LlamaServer]:
    """The same, answering 401 to a request without `Authorization: Bearer UPSTREAM_KEY`."""
    with LlamaServer(tiny_model, api_key=UPSTREAM_KEY) as server:
        yield server


@pytest.fixture(scope="session")
def smollm2_server() -> Iterator[LlamaServer]:
    """llama.cpp's server on SmolLM2-135M-Instruct, a real (small) chat model."""
    with LlamaServer(smollm2(), context=2048) as server:
        yield server


Client = TestClient[web.Request, web.Application]
MakeGateway = Callable[..., Awaitable[Client]]
SCOPE_SECRET = "test-scope-secret"
API_KEY = "sk-client-a"  # the SDK clients' credential unless a test gives another


@pytest.fixture
def make_gateway(aiohttp_client: Any, redis: Redis, model_version: str) -> MakeGateway:
    """predcache in front of the OpenAI API at `url` (…/v1), built from settings as `python -m
    service` builds it, on the shared Redis under this test's own model version."""

    async def make(url: str, **settings: Any) -> Client:
        """With `redis_url` in the settings, the app makes its own Redis client (a replica)."""
        settings.setdefault("model_version", model_version)
        settings.setdefault("redis_timeout_s", 1.0)
        settings.setdefault("model_timeout_s", 30.0)
        if "upstream_api_key" not in settings:
            settings.setdefault("cache_scope_secret", SCOPE_SECRET)
        shared = None if "redis_url" in settings else redis
        app = create_app(replace(Settings(), model=f"openai+{url}", **settings), redis=shared)
        client: Client = await aiohttp_client(app)
        return client

    return make


@pytest.fixture
async def scripted(aiohttp_server: Any) -> ScriptedUpstream:
    """The scripted upstream, served on a free port: its API at `scripted.url`."""
    upstream = ScriptedUpstream()
    server = await aiohttp_server(upstream.app())
    upstream.url = str(server.make_url("/v1"))
    return upstream


Sdk = Callable[..., openai.AsyncOpenAI]
SyncSdk = Callable[..., openai.OpenAI]


@pytest.fixture
async def sdk() -> AsyncIterator[Sdk]:
    """`sdk(client, api_key=...)`: the official SDK's async client pointed at predcache (no retries,
    so upstream counts are exact), closed when the test ends."""
    opened: list[openai.AsyncOpenAI] = []

    def make(client: Client, api_key: str = API_KEY) -> openai.AsyncOpenAI:
        api = openai.AsyncOpenAI(base_url=str(client.make_url("/v1")), api_key=api_key, max_retries=0)
        opened.append(api)
        return api

    yield make
    for api in opened:
        await api.close()


@pytest.fixture
def sync_sdk() -> Iterator[SyncSdk]:
    """The same, synchronous: call it in a thread (`asyncio.to_thread`), the app runs on this loop."""
    opened: list[openai.OpenAI] = []

    def make(client: Client, api_key: str = API_KEY) -> openai.OpenAI:
        api = openai.OpenAI(base_url=str(client.make_url("/v1")), api_key=api_key, max_retries=0)
        opened.append(api)
        return api

    yield make
    for api in opened:
        api.close()
