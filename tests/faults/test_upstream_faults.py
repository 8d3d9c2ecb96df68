"""The fault suite in upstream mode, MLServer the model: a Redis outage costs no request, clients
hanging up by the hundred never cross answers or leak a call, and hostile bodies never reach it."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Any

import aiohttp
import hypothesis
import orjson
import pytest
import requests
import schemathesis
from aiohttp import web
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import negative_data_rejection

from service.app import create_app
from service.caching.backends import RedisBackend
from service.http import appkeys as keys
from service.redis.topology import create_redis_client
from service.settings.config import Settings
from tests.faults.conftest import (
    FAULT_SETTINGS,
    LOOP_ALLOWANCE_S,
    REDIS_TIMEOUT_S,
    assert_no_leaks,
    eventually,
    freeze_heap,
)
from tests.faults.test_bad_input import ThreadedService
from tests.support.mlserver import REPO, MLServer
from tests.support.redis_server import RedisServer
from tests.support.tcp_proxy import TcpProxy
from tests.test_api import keys_of

pytestmark = pytest.mark.redis

Client = TestClient[web.Request, web.Application]
StartUpstream = Callable[..., Awaitable[Client]]

UPSTREAM_LATENCY_S = 0.1
IRIS_SCHEMA = REPO / "examples" / "iris_v2_request.schema.json"
INPUTS = [{"q": i, "tag": f"input-{i}"} for i in range(4)]


@pytest.fixture
async def start_upstream(
    aiohttp_client: Any, lab: MLServer, model_version: str
) -> AsyncIterator[StartUpstream]:
    """`await start_upstream(redis_url, **settings)`: predcache over that Redis, the lab its model."""
    clients: list[Redis] = []

    async def start(redis_url: str, **settings: Any) -> Client:
        merged = {
            **FAULT_SETTINGS,
            "redis_url": redis_url,
            "model": f"{lab.url}/lab/predict",
            "model_version": model_version,
            **settings,
        }
        redis = create_redis_client(redis_url, timeout_s=merged["redis_timeout_s"], max_connections=64)
        clients.append(redis)
        client: Client = await aiohttp_client(create_app(replace(Settings(), **merged), redis=redis))
        freeze_heap()
        return client

    yield start
    for redis in clients:
        await redis.aclose()


async def ask(client: Client, body: dict[str, Any]) -> tuple[int, dict[str, Any], str, float]:
    started = time.monotonic()
    # Through the session: the test client keeps every response until the test ends.
    async with client.session.post(client.make_url("/predict"), json=body) as response:
        answer = orjson.loads(await response.read())
        return response.status, answer, response.headers.get("X-Cache", ""), time.monotonic() - started


async def upstream_calls(lab: MLServer) -> int:
    return sum((await asyncio.to_thread(lab.lab_calls)).values())


async def wave(client: Client, lab: MLServer) -> list[tuple[int, dict[str, Any], str, float]]:
    """5 concurrent requests per input: all answered with their own input's answer, at most one
    upstream call per input."""
    before = await upstream_calls(lab)
    replies = await asyncio.gather(*(ask(client, body) for body in INPUTS for _ in range(5)))
    for body, (status, answer, _, _) in zip([b for b in INPUTS for _ in range(5)], replies, strict=True):
        assert (status, answer["echo"]) == (200, body)
    assert await upstream_calls(lab) - before <= len(INPUTS)
    return replies


@pytest.mark.parametrize("fault", ["refused", "killed"])
async def test_a_redis_outage_costs_no_request_in_upstream_mode(
    start_upstream: StartUpstream, lab: MLServer, proxy: TcpProxy, server: RedisServer, fault: str
) -> None:
    lab.lab(sleep_s=UPSTREAM_LATENCY_S)
    client = await start_upstream(proxy.url_for())
    await wave(client, lab)
    assert {x_cache for _, _, x_cache, _ in await wave(client, lab)} == {"HIT"}

    if fault == "refused":
        proxy.refuse()
        proxy.reset_all()
    else:
        server.kill()
    replies = []
    outage_ends = time.monotonic() + 1.2
    while time.monotonic() < outage_ends:
        replies += await wave(client, lab)
    slowest_s = max(elapsed_s for _, _, _, elapsed_s in replies)
    assert slowest_s <= REDIS_TIMEOUT_S + UPSTREAM_LATENCY_S + LOOP_ALLOWANCE_S

    if fault == "refused":
        await proxy.accept()
    else:
        await asyncio.to_thread(server.restart)
    cache = client.app[keys.CACHE]
    assert isinstance(cache, RedisBackend)
    recovered_at = time.monotonic()
    while True:
        status, answer, x_cache, _ = await ask(client, INPUTS[0])
        assert (status, answer["echo"]) == (200, INPUTS[0])
        if x_cache == "HIT" and cache.breaker.is_closed:
            break
        assert time.monotonic() - recovered_at < 1.5, "Redis did not serve again after recovery"
        await asyncio.sleep(0.02)


@pytest.mark.slow
async def test_clients_hanging_up_never_cross_upstream_answers_and_leak_nothing(
    start_upstream: StartUpstream,
    lab: MLServer,
    proxy: TcpProxy,
    loop_errors: list[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    rng = random.Random(5)
    proxy.jitter_s = 0.02
    lab.lab(sleep_s=0.03)
    client = await start_upstream(proxy.url_for(), ttl_s=0.5, model_timeout_s=1.0)
    inputs = [{"q": i} for i in range(30)]
    completed: list[tuple[dict[str, Any], int, bytes]] = []
    hung_up = 0
    connector = aiohttp.TCPConnector(limit=300)
    async with aiohttp.ClientSession(str(client.make_url("")), connector=connector) as session:

        async def one(body: dict[str, Any], hang_up_after_s: float | None) -> None:
            nonlocal hung_up
            try:
                async with asyncio.timeout(hang_up_after_s):
                    async with session.post("/predict", json=body) as response:
                        completed.append((body, response.status, await response.read()))
            except TimeoutError:
                hung_up += 1

        await asyncio.gather(
            *(
                one(rng.choice(inputs), rng.uniform(0.0, 0.15) if rng.random() < 1 / 3 else None)
                for _ in range(900)
            )
        )

    assert hung_up > 90
    assert len(completed) + hung_up == 900
    for body, status, answer in completed:
        assert status == 200, (body, status, answer)
        assert orjson.loads(answer)["echo"] == body  # its own input's answer, never another's
    predictions = client.app[keys.PREDICTIONS]
    await eventually(lambda: not predictions.in_flight, timeout_s=3.0)
    assert_no_leaks(loop_errors, caplog.text)


HOSTILE_BODIES = [
    b"",
    b"\x00",
    b"\xff\xfe",
    b'{"a":',
    b"[]",
    b'"a"',
    b"null",
    b'{"a": NaN}',
    b'{"a": 1e400}',
    b'{"\\ud800": 1}',
    b'{"a": ' + b"[" * 500 + b"]" * 500 + b"}",
    b'{"a": ' + b"[" * 2000 + b"]" * 2000 + b"}",
    b'{"a": "' + b"x" * 70_000 + b'"}',
]


async def test_hostile_bodies_get_no_5xx_and_never_reach_the_upstream(
    start_upstream: StartUpstream, lab: MLServer, private_redis: RedisServer, model_version: str
) -> None:
    client = await start_upstream(private_redis.url)
    for body in HOSTILE_BODIES:
        async with client.post(
            "/predict", data=body, headers={"Content-Type": "application/json"}
        ) as response:
            assert response.status in (400, 413), (body[:40], response.status, await response.text())
            assert orjson.loads(await response.read())["error"]["code"]
    async with client.get("/predict", params=[("a", "1"), ("a", "2")]) as response:
        assert response.status == 400
    async with client.post("/predict", data=b"a=1") as response:
        assert response.status == 415
    redis = create_redis_client(private_redis.url, timeout_s=1.0, max_connections=2)
    try:
        assert await keys_of(redis, model_version) == []
    finally:
        await redis.aclose()
    assert await upstream_calls(lab) == 0


def test_fuzzed_invalid_requests_are_refused_before_the_upstream(
    mlserver: MLServer, private_redis: RedisServer
) -> None:
    """Schemathesis's negative data for the published iris schema: every case a 4xx, none a 5xx,
    and MLServer runs no inference for any of them."""
    settings_ = replace(
        Settings(),
        redis_url=private_redis.url,
        model=f"{mlserver.url}/v2/models/iris/infer",
        model_version="iris-fuzz",
        input_schema=str(IRIS_SCHEMA),
        # Room for schemathesis's largest bodies: a 413 is a refusal too, but not one it expects.
        max_body_bytes=8 * 1024 * 1024,
    )
    service = ThreadedService(create_app(settings_)).start()
    http = requests.Session()
    try:
        before = mlserver.inferences("iris")
        api_schema = schemathesis.openapi.from_url(service.url + "/openapi.json")
        operations: set[str] = set()

        @hypothesis.settings(
            max_examples=150, deadline=None, suppress_health_check=list(hypothesis.HealthCheck), database=None
        )
        @hypothesis.given(case=api_schema.as_strategy(generation_mode=schemathesis.GenerationMode.NEGATIVE))
        def fuzz(case: schemathesis.Case[Any]) -> None:
            operations.add(case.operation.label)
            case.call_and_validate(
                base_url=service.url, session=http, checks=[not_a_server_error, negative_data_rejection]
            )

        fuzz()
        assert "POST /predict" in operations  # GET has no parameter to negate: the schema has no scalars
        assert mlserver.inferences("iris") == before
    finally:
        http.close()
        service.stop()
