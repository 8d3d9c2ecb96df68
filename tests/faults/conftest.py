"""Fixtures of the fault suite: a private Redis behind a fault proxy, a service over it, loop errors."""

from __future__ import annotations

import asyncio
import gc
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from service.caching.backends import RedisBackend
from service.caching.predictions import Predictions
from service.http import appkeys as keys
from service.redis.breaker import CircuitBreaker
from service.redis.topology import create_redis_client
from tests.conftest import MakeClient, no_redis
from tests.support.models import CountingModel

# Short budgets so a whole outage fits in a second or two of test time.
REDIS_TIMEOUT_S = 0.05
BREAKER_COOLDOWN_S = 0.3
FAULT_SETTINGS: dict[str, Any] = {
    "redis_timeout_s": REDIS_TIMEOUT_S,
    "breaker_cooldown_s": BREAKER_COOLDOWN_S,
    "model_timeout_s": 2.0,
    "lease_ttl_s": 1.0,
    "ttl_s": 30.0,
    "stale_s": 0.0,
    "xfetch_beta": 0.0,
    # Every read goes to Redis: the faults under test are Redis's, not hidden by the in-process copy.
    "near_ttl_s": 0.0,
}

# What a busy machine (CI, or a 2-core box running other suites) adds to any timer of the event loop; a
# timing bound is the requirement's own figure plus this.
LOOP_ALLOWANCE_S = 0.15

# What asyncio reports when a task or future is dropped with its error unread.
LEAK_MESSAGES = ("Task was destroyed", "exception was never retrieved", "never retrieved")


def freeze_heap() -> None:
    """What `python -m service` does once started (see service/__main__.py). Without it a full
    collection of this process's heap, the whole test session's, stalls the loop for 0.1 s or more,
    which a timing bound would take for the service waiting on Redis."""
    gc.collect()
    gc.freeze()


@pytest.fixture(autouse=True)
def _unfreeze_heap() -> Iterator[None]:
    yield
    gc.unfreeze()


@pytest.fixture(autouse=True)
def _needs_redis_server() -> None:
    if shutil.which("redis-server") is None:
        no_redis("no redis-server on PATH: the fault suite starts its own")


class CountingBreaker(CircuitBreaker):
    """A breaker that records when it let a probe through while open."""

    def __init__(self, *, cooldown_s: float) -> None:
        super().__init__(cooldown_s=cooldown_s)
        self.probes: list[float] = []

    def allow(self) -> bool:
        was_open = not self.is_closed
        allowed = super().allow()
        if was_open and allowed:
            self.probes.append(time.monotonic())
        return allowed


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes
    elapsed_s: float

    @property
    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass
class Service:
    """One in-process service over a Redis URL, and the handles a fault test inspects."""

    client: TestClient[web.Request, web.Application]
    model: CountingModel
    redis: Redis  # the service's own client (its pool is what must not leak)
    breaker: CountingBreaker = field(init=False)

    def __post_init__(self) -> None:
        # Swapped in before any fault, so probes while open are counted.
        backend = self.backend
        self.breaker = CountingBreaker(cooldown_s=backend.breaker.cooldown_s)
        backend.breaker = self.breaker

    @property
    def app(self) -> web.Application:
        return self.client.app

    @property
    def backend(self) -> RedisBackend:
        cache = self.app[keys.CACHE]
        assert isinstance(cache, RedisBackend)
        return cache

    @property
    def predictions(self) -> Predictions:
        return self.app[keys.PREDICTIONS]

    def connections_in_use(self) -> int:
        pool = self.redis.connection_pool
        return len(pool._in_use_connections)

    async def get(self, pair: str, **headers: str) -> Reply:
        started = time.monotonic()
        # Through the session: the test client keeps every response it made until the test ends,
        # and an outage test makes thousands, which would slow each full collection.
        url = self.client.make_url("/predict")
        async with self.client.session.get(url, params={"pair": pair}, headers=headers) as response:
            body = await response.read()
            return Reply(response.status, dict(response.headers), body, time.monotonic() - started)

    async def metric(self, name: str) -> float:
        text = await (await self.client.get("/metrics")).text()
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        raise KeyError(name)


StartService = Callable[..., Awaitable[Service]]


@pytest.fixture
async def start_service(make_client: MakeClient, model_version: str) -> AsyncIterator[StartService]:
    """`await start_service(url, model=..., **settings)`: the service over the Redis at `url`."""
    clients: list[Redis] = []

    async def start(url: str, *, model: CountingModel | None = None, **settings: Any) -> Service:
        merged = {**FAULT_SETTINGS, "redis_url": url, **settings}
        redis = create_redis_client(
            url, timeout_s=merged["redis_timeout_s"], max_connections=merged.get("redis_max_connections", 64)
        )
        clients.append(redis)
        model = model or CountingModel(version=model_version)
        client = await make_client(model=model, redis=redis, **merged)
        freeze_heap()
        return Service(client, model, redis)

    yield start
    for redis in clients:
        await redis.aclose()


@pytest.fixture
async def loop_errors() -> AsyncIterator[list[str]]:
    """What the event loop reports as unhandled (dropped tasks, unread exceptions), as messages."""
    loop = asyncio.get_running_loop()
    errors: list[str] = []
    previous = loop.get_exception_handler()

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        errors.append(f"{context.get('message')}: {context.get('exception')!r}")

    loop.set_exception_handler(handler)
    yield errors
    gc.collect()  # "Task was destroyed" and "never retrieved" are reported when the object is collected
    loop.set_exception_handler(previous)


async def eventually(condition: Callable[[], bool], *, timeout_s: float, step_s: float = 0.005) -> None:
    """Return once `condition()` holds; fail the test if it does not within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        await asyncio.sleep(step_s)
    assert condition(), f"not true within {timeout_s} s"


def assert_no_leaks(errors: list[str], log_text: str) -> None:
    leaks = [e for e in errors if any(m in e for m in LEAK_MESSAGES)]
    leaks += [line for line in log_text.splitlines() if any(m in line for m in LEAK_MESSAGES)]
    assert leaks == []
