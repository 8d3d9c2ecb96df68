"""A single-flight call whose callers leave, whose model hangs or raises: the others are still answered."""

from __future__ import annotations

import asyncio
import time

import pytest
from redis.asyncio import Redis

from service.redis import keyspace
from tests.faults.conftest import LOOP_ALLOWANCE_S, Reply, Service, StartService, eventually
from tests.support.keys import pair_input, pair_key
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.redis

PAIR = "ETH-EUR"


async def wait_until_model_runs(service: Service, calls: int = 1) -> None:
    await eventually(lambda: service.model.total_calls >= calls, timeout_s=2.0)


async def stored_keys(server: RedisServer, version: str) -> list[bytes]:
    client = Redis.from_url(server.url)
    try:
        found = [key async for key in client.scan_iter(match=keyspace.entry_pattern(version))]
        return sorted(key for key in found if not key.endswith((b":lease", b":generation")))
    finally:
        await client.aclose()


async def test_leader_disconnect_leaves_followers_their_200(
    start_service: StartService, server: RedisServer
) -> None:
    """The client whose request started the model call hangs up; the ten that joined it get 200."""
    service = await start_service(server.url)
    service.model.latency_s = 0.3
    leader = asyncio.create_task(service.get(PAIR))
    await wait_until_model_runs(service)
    followers = [asyncio.create_task(service.get(PAIR)) for _ in range(10)]
    await asyncio.sleep(0.05)
    leader.cancel()
    replies: list[Reply] = await asyncio.gather(*followers)
    assert [r.status for r in replies] == [200] * 10
    assert {r.json["predicted_price"] for r in replies} == {service.model.value(PAIR)}
    assert service.model.total_calls == 1
    assert service.model.cancelled == 0


async def test_leader_cancelled_inside_the_service_does_not_cancel_the_call(
    start_service: StartService, server: RedisServer
) -> None:
    """Even a cancellation reaching the leader's coroutine itself (a handler timeout, a server with
    handler cancellation on) leaves the shared call running for the followers."""
    service = await start_service(server.url)
    service.model.latency_s = 0.3
    predictions = service.predictions
    leader = asyncio.create_task(predictions.get(pair_input(PAIR)))
    await wait_until_model_runs(service)
    followers = [asyncio.create_task(predictions.get(pair_input(PAIR))) for _ in range(5)]
    await asyncio.sleep(0.05)
    leader.cancel()
    answers = await asyncio.gather(*followers)
    assert {a.entry.body for a in answers} == {answers[0].entry.body}
    assert service.model.total_calls == 1
    assert service.model.cancelled == 0
    assert len(predictions.in_flight) == 0


async def test_every_waiter_leaves_then_a_new_request_arrives(
    start_service: StartService, server: RedisServer, model_version: str
) -> None:
    """All waiters hang up mid-call: the call completes and is stored; a newcomer gets it with 200."""
    service = await start_service(server.url)
    service.model.latency_s = 0.3
    waiters = [asyncio.create_task(service.predictions.get(pair_input(PAIR))) for _ in range(5)]
    await wait_until_model_runs(service)
    for waiter in waiters:
        waiter.cancel()
    await asyncio.gather(*waiters, return_exceptions=True)
    reply = await service.get(PAIR)
    assert reply.status == 200
    assert reply.json["predicted_price"] == service.model.value(PAIR)
    assert service.model.total_calls == 1
    assert await stored_keys(server, model_version) == [pair_key(model_version, PAIR).encode()]


async def test_a_hanging_model_gives_504_to_all_within_the_timeout(
    start_service: StartService, server: RedisServer, model_version: str
) -> None:
    """Every waiter gets 504 within the model timeout plus 50 ms; the in-flight entry is gone."""
    timeout_s = 0.3
    service = await start_service(server.url, model_timeout_s=timeout_s)
    service.model.hang = True
    replies = await asyncio.gather(*(service.get(PAIR) for _ in range(20)))
    assert [r.status for r in replies] == [504] * 20
    assert {r.json["error"]["code"] for r in replies} == {"model_timeout"}
    slowest = max(r.elapsed_s for r in replies)
    assert slowest <= timeout_s + 0.05 + LOOP_ALLOWANCE_S, f"slowest 504 after {slowest:.3f} s"
    assert len(service.predictions.in_flight) == 0
    assert service.model.total_calls == 1
    assert service.model.active == 0  # the hung call was cancelled, not left running
    assert await stored_keys(server, model_version) == []


async def test_a_raising_model_gives_503_to_all_caches_nothing_and_is_retried(
    start_service: StartService, server: RedisServer, model_version: str
) -> None:
    service = await start_service(server.url)
    service.model.latency_s = 0.1
    service.model.fail = True
    replies = await asyncio.gather(*(service.get(PAIR) for _ in range(20)))
    assert [r.status for r in replies] == [503] * 20
    assert {r.json["error"]["code"] for r in replies} == {"model_error"}
    assert service.model.total_calls == 1
    assert await stored_keys(server, model_version) == []
    service.model.fail = False
    retried = await service.get(PAIR)
    assert (retried.status, retried.headers["X-Cache"]) == (200, "MISS")
    assert service.model.total_calls == 2


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
async def test_a_non_finite_prediction_is_503_and_never_cached(
    start_service: StartService, server: RedisServer, model_version: str, value: float
) -> None:
    service = await start_service(server.url)
    service.model.result = value
    replies = await asyncio.gather(*(service.get(PAIR) for _ in range(5)))
    assert [r.status for r in replies] == [503] * 5
    assert await stored_keys(server, model_version) == []
    service.model.result = None
    retried = await service.get(PAIR)
    assert (retried.status, retried.headers["X-Cache"]) == (200, "MISS")
    assert retried.json["predicted_price"] == service.model.value(PAIR)


async def test_a_model_that_outlives_its_waiters_is_still_bounded_by_the_timeout(
    start_service: StartService, server: RedisServer
) -> None:
    """A hung call whose waiters all left still ends at the model timeout: nothing lingers in flight."""
    service = await start_service(server.url, model_timeout_s=0.2)
    service.model.hang = True
    waiter = asyncio.create_task(service.predictions.get(pair_input(PAIR)))
    await wait_until_model_runs(service)
    waiter.cancel()
    started = time.monotonic()
    await eventually(lambda: not service.predictions.in_flight, timeout_s=1.0)
    assert time.monotonic() - started < 0.2 + LOOP_ALLOWANCE_S
    assert service.model.active == 0
