"""Shared fixtures: a real Redis, a service app factory and a test model with a call counter."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from service.app import create_app
from service.models.protocols import Predictor
from service.redis.topology import create_redis_client
from service.settings.config import Settings
from tests.support.mlserver import MLServer
from tests.support.redis_cluster import RedisClusterNodes, SentinelSet
from tests.support.redis_server import RedisServer
from tests.support.tcp_proxy import TcpProxy

MakeClient = Callable[..., Awaitable[TestClient[web.Request, web.Application]]]


def no_redis(reason: str) -> None:
    # Locally a missing Redis skips; CI (.ci/run sets PREDCACHE_REQUIRE_REDIS) must not pass by skipping.
    if os.environ.get("PREDCACHE_REQUIRE_REDIS"):
        pytest.fail(f"{reason}, and PREDCACHE_REQUIRE_REDIS is set")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A real Redis: REDIS_URL when set, else a private redis-server for the whole session."""
    url = os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    if shutil.which("redis-server") is None:
        no_redis("no REDIS_URL and no redis-server on PATH")
    with RedisServer() as server:
        yield server.url


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    """A redis-server of this test's own, which it may stop, freeze or kill."""
    if shutil.which("redis-server") is None:
        no_redis("no redis-server on PATH")
    with RedisServer() as server:
        yield server


@pytest.fixture
def redis_cluster() -> Iterator[RedisClusterNodes]:
    """A private 6-node Redis Cluster (3 primaries, a replica each) this test may kill nodes of."""
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        no_redis("no redis-server and redis-cli on PATH")
    with RedisClusterNodes() as cluster:
        yield cluster


@pytest.fixture
def redis_sentinel() -> Iterator[SentinelSet]:
    """A private primary, replica and 3 sentinels (down after 1 s) this test may kill the primary of."""
    if shutil.which("redis-server") is None:
        no_redis("no redis-server on PATH")
    with SentinelSet() as sentinel:
        yield sentinel


@pytest.fixture(scope="session")
def mlserver() -> Iterator[MLServer]:
    """A real model server, MLServer, for upstream mode: the iris model (scikit-learn) and the lab."""
    with MLServer() as server:
        yield server


@pytest.fixture
def lab(mlserver: MLServer) -> Iterator[MLServer]:
    """The MLServer with its lab runtime answering normally, its call counts at zero."""
    mlserver.lab()
    yield mlserver
    mlserver.lab()


@pytest.fixture
def server(private_redis: RedisServer) -> RedisServer:
    """The fault tests' name for the private redis-server they stop, freeze, kill and restart."""
    return private_redis


@pytest.fixture
async def proxy(private_redis: RedisServer) -> AsyncIterator[TcpProxy]:
    """The fault-injecting proxy in front of the private redis-server."""
    proxy = await TcpProxy("127.0.0.1", private_redis.port).start()
    yield proxy
    await proxy.close()


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = create_redis_client(redis_url, timeout_s=1.0, max_connections=16)
    yield client
    await client.aclose()


@pytest.fixture
def model_version() -> str:
    """A model version of this test's own: its cache keys never meet another test's in a shared Redis."""
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def make_client(aiohttp_client: Any) -> MakeClient:
    """Start the service in-process: `await make_client(model=..., redis=..., ttl_s=...)`."""

    async def make(
        *, model: Predictor, redis: Redis | None = None, **settings: Any
    ) -> TestClient[web.Request, web.Application]:
        # A generous Redis budget: on a busy CI machine 250 ms can pass without Redis being sick, and
        # only the fault tests (which set it themselves) are about Redis being slow.
        settings.setdefault("redis_timeout_s", 1.0)
        app = create_app(replace(Settings(), **settings), redis=redis, model=model)
        client: TestClient[web.Request, web.Application] = await aiohttp_client(app)
        return client

    return make
