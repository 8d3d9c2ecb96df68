"""No invalidation undone by a Redis that restarts empty, comes back from an older snapshot, or goes
away while a replica's copies are older than what it knows."""

from __future__ import annotations

import asyncio
import time

import pytest
from redis.asyncio import Redis

from service.redis import keyspace
from tests.faults.conftest import Reply, Service, StartService, eventually
from tests.support.models import CountingModel
from tests.support.redis_server import RedisServer

pytestmark = [pytest.mark.redis, pytest.mark.slow]

TOKEN = "invalidation-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
BEFORE, AFTER = 1.0, 2.0  # the model's answer before and after the invalidation


async def prices(services: list[Service], pair: str, seconds: float) -> list[Reply]:
    """Ask every replica for `pair` again and again for `seconds`; every reply is a 200."""
    replies: list[Reply] = []
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        replies += await asyncio.gather(*(service.get(pair) for service in services))
        await asyncio.sleep(0.05)
    assert {reply.status for reply in replies} == {200}
    return replies


def served(replies: list[Reply]) -> set[float]:
    return {reply.json["predicted_price"] for reply in replies}


async def delete(service: Service, path: str) -> None:
    response = await service.client.delete(path, headers=AUTH)
    assert response.status == 200, await response.text()


async def test_a_redis_restored_from_before_a_delete_does_not_bring_the_predictions_back(
    start_service: StartService, server: RedisServer, model_version: str
) -> None:
    """Snapshot, DELETE /cache, then Redis restarts from the snapshot (its entries and its generation
    counter as they were before the DELETE): no replica serves a pre-DELETE prediction, and the
    counter in Redis is raised back within a second or two."""
    model = CountingModel(version=model_version)
    model.result = BEFORE
    first = await start_service(server.url, model=model, admin_token=TOKEN)
    second = await start_service(server.url, model=model, admin_token=TOKEN)
    assert served(await prices([first, second], "ETH-EUR", 0.2)) == {BEFORE}
    snapshot = Redis.from_url(server.url)
    await snapshot.save()  # dump.rdb in the server's directory, which a restart loads
    await snapshot.aclose()

    model.result = AFTER
    await delete(first, "/cache")
    assert served(await prices([first, second], "ETH-EUR", 0.5)) == {AFTER}
    counter = keyspace.model_generation_key(model_version)
    raised = await server.get(counter)
    assert raised is not None

    await asyncio.to_thread(server.restart)
    assert await server.get(counter) != raised  # the snapshot's counter, from before the DELETE
    assert served(await prices([first, second], "ETH-EUR", 2.0)) == {AFTER}
    # Within a second or two (a re-read every second, after a breaker cool-down); loose for a busy machine.
    deadline = time.monotonic() + 3.0
    while await server.get(counter) != raised:
        assert time.monotonic() < deadline, "the replicas did not raise the counter back"
        await asyncio.sleep(0.1)


async def test_a_call_in_flight_across_a_delete_and_an_empty_restart_is_not_stored_or_served(
    start_service: StartService, server: RedisServer, model_version: str
) -> None:
    """DELETE /cache/SOL-EUR while its model call runs, then Redis restarts empty (the key's counter
    back to nothing): the call's answer goes to the request that asked before the DELETE, and to
    nobody after it, on either replica."""
    model = CountingModel(version=model_version, latency_s=1.0)
    model.result = BEFORE
    first = await start_service(server.url, model=model, admin_token=TOKEN)
    second = await start_service(server.url, model=model, admin_token=TOKEN)
    in_flight = asyncio.create_task(first.get("SOL-EUR"))
    await eventually(lambda: model.total_calls == 1, timeout_s=2.0)
    await delete(first, "/cache/SOL-EUR")
    await asyncio.to_thread(server.restart)
    assert (await in_flight).json["predicted_price"] == BEFORE
    model.result = AFTER
    model.latency_s = 0.0
    assert served(await prices([first, second], "SOL-EUR", 2.0)) == {AFTER}


async def test_a_copy_served_while_redis_is_down_is_checked_against_the_newest_generation(
    start_service: StartService, server: RedisServer, model_version: str
) -> None:
    """A replica misses the DELETE /cache event (its subscription lost it) but re-reads the new
    generation; then Redis goes away: its own copy, older than that generation, is not served."""
    model = CountingModel(version=model_version)
    model.result = BEFORE
    first = await start_service(server.url, model=model, admin_token=TOKEN)
    second = await start_service(server.url, model=model, admin_token=TOKEN)
    # Twice: the second read keeps the copy (the first one's own "stored" event may drop it).
    assert served(await prices([second], "ETH-EUR", 0.3)) == {BEFORE}
    fleet = second.predictions.fleet
    assert fleet is not None
    await fleet.events.close()  # the stand-in for a subscription that lost its messages
    model.result = AFTER
    await delete(first, "/cache")
    # The lost event's stand-in, the re-read every second, tells the replica of the new generation.
    known = first.predictions.generations
    await eventually(lambda: second.predictions.generations.model == known.model, timeout_s=3.0)
    server.kill()
    assert served(await prices([second], "ETH-EUR", 1.0)) == {AFTER}


class AnswersAsAtItsStart(CountingModel):
    """A model whose answer is the one `result` held when the call started, however long it runs."""

    async def predict(self, pair: str) -> float:
        answer = self.value(pair)
        await super().predict(pair)
        return answer


async def test_a_request_after_a_delete_does_not_join_the_call_that_started_before_it(
    start_service: StartService, server: RedisServer, model_version: str
) -> None:
    """DELETE /cache/SOL-EUR while its model call runs: the request that started the call gets its
    answer; a request after the DELETE gets a call of its own, made after the DELETE."""
    model = AnswersAsAtItsStart(version=model_version, latency_s=0.5)
    model.result = BEFORE
    service = await start_service(server.url, model=model, admin_token=TOKEN)
    first = asyncio.create_task(service.get("SOL-EUR"))
    await eventually(lambda: model.total_calls == 1, timeout_s=2.0)
    await delete(service, "/cache/SOL-EUR")
    model.result = AFTER
    after = await service.get("SOL-EUR")
    assert (await first).json["predicted_price"] == BEFORE
    assert after.json["predicted_price"] == AFTER
    assert model.total_calls == 2
    assert served(await prices([service], "SOL-EUR", 0.3)) == {AFTER}
