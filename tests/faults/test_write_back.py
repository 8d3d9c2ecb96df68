"""What a replica computed while Redis was down reaches Redis as soon as it answers again, without
overwriting a newer entry; and a replica's own "stored" event does not drop what it just stored."""

from __future__ import annotations

import asyncio
import contextlib
import time

import orjson
import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from service.redis import keyspace
from tests.faults.conftest import LOOP_ALLOWANCE_S, StartService, eventually
from tests.support.keys import pair_key
from tests.support.models import CountingModel
from tests.support.redis_server import RedisServer
from tests.support.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.redis, pytest.mark.slow]

BEFORE, AFTER = 1.0, 2.0


async def test_a_prediction_computed_while_redis_was_down_is_written_back_when_it_answers(
    start_service: StartService, server: RedisServer, model_version: str
) -> None:
    """Computed during an outage, the entry reaches Redis within a second or two of Redis answering
    again, with no request asking for it; the other replica then hits it instead of calling the model."""
    model = CountingModel(version=model_version)
    first = await start_service(server.url, model=model)
    second = await start_service(server.url, model=model)
    server.stop()
    assert (await first.get("ETH-EUR")).status == 200
    assert model.total_calls == 1
    await asyncio.to_thread(server.restart)
    key = pair_key(model_version, "ETH-EUR")
    restarted = time.monotonic()
    while await server.get(key) is None:
        assert time.monotonic() - restarted < 2.0 + LOOP_ALLOWANCE_S, "not written back"
        await asyncio.sleep(0.05)
    # The other replica's pooled connections are from before the restart, and redis-py (retries off)
    # fails each one's first command: let one of them fail here, not the request below.
    await eventually(lambda: second.breaker.is_closed, timeout_s=2.0)
    with contextlib.suppress(RedisError):
        await second.redis.ping()
    reply = await second.get("ETH-EUR")
    assert reply.headers["X-Cache"] == "HIT"
    assert model.total_calls == 1


async def test_a_write_back_does_not_overwrite_a_newer_entry(
    start_service: StartService, server: RedisServer, proxy: TcpProxy, model_version: str
) -> None:
    """One replica computes while its Redis is unreachable; meanwhile another stores a newer answer;
    when the first reaches Redis again, the newer entry stays."""
    model = CountingModel(version=model_version)
    model.result = BEFORE
    cut_off = await start_service(proxy.url_for(), model=model)
    other = await start_service(server.url, model=model)
    proxy.refuse()
    proxy.reset_all()
    assert (await cut_off.get("ETH-EUR")).json["predicted_price"] == BEFORE
    model.result = AFTER
    assert (await other.get("ETH-EUR")).json["predicted_price"] == AFTER
    written = "predcache_cache_write_backs_total"
    await proxy.accept()
    deadline = time.monotonic() + 2.0
    while await cut_off.metric(f'{written}{{result="newer_kept"}}') < 1:
        assert time.monotonic() < deadline, "no write-back attempted"
        await asyncio.sleep(0.05)
    raw = await server.get(pair_key(model_version, "ETH-EUR"))
    assert raw is not None
    assert orjson.loads(raw.partition(b"\n")[2])["predicted_price"] == AFTER


async def test_a_replica_keeps_its_own_copy_when_its_stored_event_comes_back(
    start_service: StartService, server: RedisServer, model_version: str
) -> None:
    """The "stored" event a replica publishes reaches its own subscription too: its near-cache keeps
    what it just stored (the other replicas drop their older copies)."""
    service = await start_service(server.url, near_ttl_s=30.0)
    listener = Redis.from_url(server.url)
    subscription = listener.pubsub(ignore_subscribe_messages=True)
    await subscription.subscribe(keyspace.events_channel(model_version))
    try:
        assert (await service.get("ETH-EUR")).status == 200
        message = None
        deadline = time.monotonic() + 2.0
        while message is None and time.monotonic() < deadline:
            # None also for the subscription's own confirmation.
            message = await subscription.get_message(timeout=0.1)
        assert message is not None
        # The service's own subscription got it at the same moment; a few loop turns later:
        for _ in range(10):
            await asyncio.sleep(0.05)
            ready = orjson.loads(await (await service.client.get("/readyz")).read())
            assert ready["local_cache"]["entries"] == 1
    finally:
        await subscription.aclose()  # type: ignore[no-untyped-call]
        await listener.aclose()
