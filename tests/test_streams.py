"""The stream relay over a real Redis: a joiner on another replica gets every event of a generation in
progress, from its first, then the rest live, then the same end; whatever goes wrong, it is told so."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass

import pytest

from service.metrics import Metrics
from service.redis import keyspace
from service.redis.breaker import CircuitBreaker
from service.redis.commands import RedisCommands
from service.redis.lease import Leases
from service.redis.streams import Relayed, RelayLost, StreamRelay, reader_client
from service.redis.topology import create_client
from tests.support.redis_cluster import RedisClusterNodes
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.redis

BUDGET_S = 1.0


@dataclass
class Replica:
    """What one replica has of the relay: its commands, leases and relay (each with its own clients)."""

    commands: RedisCommands
    leases: Leases
    relay: StreamRelay

    async def close(self) -> None:
        await self.relay.close()
        await self.commands.close()


@contextlib.asynccontextmanager
async def replicas(
    url: str, count: int = 2, *, lease_ttl_s: float = 2.0, readers: int = 4, **relay: float
) -> AsyncIterator[list[Replica]]:
    """`count` replicas over the Redis at `url`; `relay` overrides StreamRelay's settings."""
    settings: dict[str, float] = {"ttl_s": 30.0, "max_events": 10_000, "max_bytes": 1 << 20, **relay}
    made: list[Replica] = []
    for _ in range(count):
        client = create_client(url, timeout_s=BUDGET_S, max_connections=8)
        await client.ping()  # a cluster client reads its first slot map
        commands = RedisCommands(
            client, metrics=Metrics(), timeout_s=BUDGET_S, breaker=CircuitBreaker(cooldown_s=1.0)
        )
        leases = Leases(commands, lease_ttl_s=lease_ttl_s)
        reader = reader_client(url, timeout_s=BUDGET_S, readers=readers)
        relayed = StreamRelay(
            commands,
            leases,
            reader,
            readers=readers,
            ttl_s=settings["ttl_s"],
            max_events=int(settings["max_events"]),
            max_bytes=int(settings["max_bytes"]),
            **{k: v for k, v in settings.items() if k in ("linger_s", "block_s")},
        )
        made.append(Replica(commands, leases, relayed))
    try:
        yield made
    finally:
        for replica in made:
            await replica.close()


async def collect(relay: StreamRelay, key: str) -> tuple[list[Relayed], float]:
    """Every event a joiner gets, and the seconds from joining to its first event."""
    started = time.perf_counter()
    first = 0.0
    events: list[Relayed] = []
    async for event in relay.join(key):
        if not events:
            first = time.perf_counter() - started
        events.append(event)
    return events, first


async def next_event(join: AsyncGenerator[Relayed, None]) -> Relayed:
    return await anext(join)


async def generate(holder: Replica, key: str, token: str, count: int, every_s: float) -> None:
    """A generation on the holder: `count` events `every_s` apart, then "completed", then the lease goes."""
    publisher = holder.relay.publisher(key, token)
    for i in range(count):
        publisher.publish(b'{"token": %d}' % i)
        await asyncio.sleep(every_s)
    publisher.finish("completed", b"[DONE]")
    assert await publisher.written()
    await holder.leases.release(key, token)


async def test_joiner_on_another_replica_gets_every_event_then_the_rest_live(
    redis_url: str, model_version: str
) -> None:
    """Joining 0.5 s into a 1 s generation: every event so far at once, the rest live, the same end."""
    key = keyspace.entry_key(model_version, "abc")
    async with replicas(redis_url) as (holder, joiner):
        token = await holder.leases.try_acquire(key)
        assert isinstance(token, str)
        generation = asyncio.create_task(generate(holder, key, token, count=50, every_s=0.02))
        await asyncio.sleep(0.5)
        events, first_s = await collect(joiner.relay, key)
        await generation
    assert [e.data for e in events[:-1]] == [b'{"token": %d}' % i for i in range(50)]
    assert events[-1] == Relayed("completed", b"[DONE]")
    # Everything produced in the first half arrived in the first read, within milliseconds.
    assert first_s < 0.05


async def test_the_stream_expires_after_its_end(redis_url: str, model_version: str) -> None:
    key = keyspace.entry_key(model_version, "ttl")
    async with replicas(redis_url, count=1, ttl_s=30.0, linger_s=2.0) as (holder,):
        token = await holder.leases.try_acquire(key)
        assert isinstance(token, str)
        publisher = holder.relay.publisher(key, token)
        publisher.publish(b"one")
        assert await publisher.written()
        client = holder.commands.client
        assert 29_000 < await client.pttl(publisher.stream) <= 30_000
        publisher.finish("cut")
        assert await publisher.written()
        assert 1_000 < await client.pttl(publisher.stream) <= 2_000
        assert await client.xlen(publisher.stream) == 2


@pytest.mark.parametrize("end", ["failed", "cut"])
async def test_every_joiner_sees_the_same_abnormal_end(redis_url: str, model_version: str, end: str) -> None:
    key = keyspace.entry_key(model_version, end)
    async with replicas(redis_url, count=3) as (holder, one, two):
        token = await holder.leases.try_acquire(key)
        assert isinstance(token, str)
        publisher = holder.relay.publisher(key, token)
        publisher.publish(b"half")
        joins = [asyncio.create_task(collect(r.relay, key)) for r in (one, two)]
        await asyncio.sleep(0.1)
        publisher.finish(end, b"upstream went away")  # type: ignore[arg-type]
        results = await asyncio.gather(*joins)
    for events, _ in results:
        assert events == [Relayed("event", b"half"), Relayed(end, b"upstream went away")]


async def test_no_generation_in_progress_is_idle(redis_url: str, model_version: str) -> None:
    async with replicas(redis_url, count=1) as (joiner,):
        with pytest.raises(RelayLost) as lost:
            await collect(joiner.relay, keyspace.entry_key(model_version, "nobody"))
    assert lost.value.reason == "idle"


async def test_a_holder_that_dies_loses_its_joiners_once_its_lease_lapses(
    redis_url: str, model_version: str
) -> None:
    """No terminal event ever comes: the joiner gives up when the lease lapses, having had what there was."""
    key = keyspace.entry_key(model_version, "dies")
    async with replicas(redis_url, lease_ttl_s=0.5, block_s=0.2) as (holder, joiner):
        token = await holder.leases.try_acquire(key)
        assert isinstance(token, str)
        holder.relay.publisher(key, token).publish(b"only")
        started = time.monotonic()
        with pytest.raises(RelayLost) as lost:
            await collect(joiner.relay, key)
    assert (lost.value.reason, lost.value.received) == ("ended", 1)
    assert time.monotonic() - started < 2.0


async def test_overflow_sends_joiners_to_the_stored_entry(redis_url: str, model_version: str) -> None:
    key = keyspace.entry_key(model_version, "long")
    async with replicas(redis_url, max_events=5) as (holder, joiner):
        token = await holder.leases.try_acquire(key)
        assert isinstance(token, str)
        publisher = holder.relay.publisher(key, token)
        for i in range(10):
            publisher.publish(b"%d" % i)
        publisher.finish("completed")
        assert await publisher.written()
        with pytest.raises(RelayLost) as lost:
            await collect(joiner.relay, key)
        assert await holder.commands.client.xlen(publisher.stream) == 5
    assert (lost.value.reason, lost.value.received) == ("overflow", 4)


async def test_joins_past_the_readers_are_refused_at_once_and_leave_the_cache_its_connections(
    redis_url: str, model_version: str
) -> None:
    """Two readers: two joins block on their own connections, a third is "busy" at once, and the cache's
    commands (a pool of 8) go on meanwhile; a join that leaves hands its reader back."""
    key = keyspace.entry_key(model_version, "busy")
    async with replicas(redis_url, readers=2) as (holder, joiner):
        token = await holder.leases.try_acquire(key)
        assert isinstance(token, str)
        publisher = holder.relay.publisher(key, token)
        publisher.publish(b"first")
        joins = [joiner.relay.join(key) for _ in range(2)]
        for join in joins:
            assert (await anext(join)).data == b"first"
        reads = [asyncio.create_task(next_event(join)) for join in joins]  # now blocked in XREAD
        await asyncio.sleep(0.05)
        started = time.perf_counter()
        with pytest.raises(RelayLost) as lost:
            await collect(joiner.relay, key)
        assert lost.value.reason == "busy"
        for _ in range(20):
            assert await joiner.commands.call("GET", key, lambda: joiner.commands.client.get(key)) is None
        assert time.perf_counter() - started < 0.5
        reads[0].cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reads[0]
        await joins[0].aclose()
        third = asyncio.create_task(collect(joiner.relay, key))
        await asyncio.sleep(0.05)
        publisher.finish("completed")
        events, _ = await third
        assert [e.kind for e in events] == ["event", "completed"]
        assert (await reads[1]).kind == "completed"


async def test_redis_gone_is_unavailable_not_an_error(private_redis: RedisServer, model_version: str) -> None:
    key = keyspace.entry_key(model_version, "gone")
    async with replicas(private_redis.url) as (holder, joiner):
        token = await holder.leases.try_acquire(key)
        assert isinstance(token, str)
        publisher = holder.relay.publisher(key, token)
        publisher.publish(b"before")
        assert await publisher.written()
        join = joiner.relay.join(key)
        assert (await anext(join)).data == b"before"
        private_redis.stop()
        publisher.publish(b"after")
        assert not await publisher.written()
        with pytest.raises(RelayLost) as lost:
            await anext(join)
        assert (lost.value.reason, lost.value.received) == ("unavailable", 1)


async def test_relay_over_a_cluster_lives_on_the_entrys_node(
    redis_cluster: RedisClusterNodes, model_version: str
) -> None:
    key = keyspace.entry_key(model_version, "cluster")
    async with replicas(redis_cluster.url) as (holder, joiner):
        token = await holder.leases.try_acquire(key)
        assert isinstance(token, str)
        assert redis_cluster.primary_for(keyspace.stream_key(key, token)) is redis_cluster.primary_for(key)
        generation = asyncio.create_task(generate(holder, key, token, count=20, every_s=0.01))
        events, first_s = await collect(joiner.relay, key)
        await generation
    assert [e.data for e in events[:-1]] == [b'{"token": %d}' % i for i in range(20)]
    assert events[-1].kind == "completed"
    assert first_s < 0.5
