"""The stream relay over a real Redis: a joiner on another replica gets every event of a generation in
progress, from its first, then the rest live, then the same end; whatever goes wrong, it is told so."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass

import pytest

from service.metrics import Metrics
from service.redis import keyspace
from service.redis.breaker import CircuitBreaker
from service.redis.commands import RedisCommands
from service.redis.events import JOIN, Events
from service.redis.lease import Leases
from service.redis.stream_publisher import StreamPublisher
from service.redis.streams import Relayed, RelayLost, StreamRelay, reader_client
from service.redis.topology import create_client
from tests.support.redis_cluster import RedisClusterNodes
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.redis

BUDGET_S = 1.0


@dataclass
class Replica:
    """One replica's part of the relay: commands, leases, events and relay (with clients of its own)."""

    commands: RedisCommands
    leases: Leases
    events: Events
    relay: StreamRelay

    async def close(self) -> None:
        await self.relay.close()
        await self.events.close()
        await self.commands.close()


async def subscribed(events: Events) -> None:
    """Wait until `events` reads its channel, so that no join request of a test is lost."""
    seen = asyncio.Event()
    probe = f"probe-{uuid.uuid4().hex}"
    events.add_join_listener(lambda stream: seen.set() if stream == probe else None)
    async with asyncio.timeout(5):
        while not seen.is_set():
            await events.publish(f"{probe}|{JOIN}")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.05):
                    await seen.wait()


@contextlib.asynccontextmanager
async def replicas(
    url: str,
    version: str,
    count: int = 2,
    *,
    lease_ttl_s: float = 2.0,
    readers: int = 4,
    max_events: int = 10_000,
    **relay: float,
) -> AsyncIterator[list[Replica]]:
    """`count` replicas of model `version` over the Redis at `url`; `relay` sets linger_s, block_s."""
    made: list[Replica] = []
    try:
        for _ in range(count):
            client = create_client(url, timeout_s=BUDGET_S, max_connections=8)
            await client.ping()  # a cluster client reads its first slot map
            commands = RedisCommands(
                client, metrics=Metrics(), timeout_s=BUDGET_S, breaker=CircuitBreaker(cooldown_s=1.0)
            )
            leases = Leases(commands, lease_ttl_s=lease_ttl_s)
            events = Events(commands, channel=keyspace.events_channel(version))
            events.start()
            reader = reader_client(url, timeout_s=BUDGET_S, readers=readers)
            relayed = StreamRelay(
                commands,
                leases,
                events,
                reader,
                readers=readers,
                ttl_s=30.0,
                max_events=max_events,
                max_bytes=1 << 20,
                **relay,
            )
            made.append(Replica(commands, leases, events, relayed))
            await subscribed(events)
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
    async with holder.relay.publishing(key, token) as publisher:
        for i in range(count):
            publisher.publish(b'{"token": %d}' % i)
            await asyncio.sleep(every_s)
        publisher.finish("completed", b"[DONE]")
    await holder.leases.release(key, token)


@contextlib.asynccontextmanager
async def holding(holder: Replica, key: str) -> AsyncIterator[StreamPublisher]:
    """The lease on `key` and the publisher of its generation, for the block; the lease goes after."""
    token = await holder.leases.try_acquire(key)
    assert isinstance(token, str)
    try:
        async with holder.relay.publishing(key, token) as publisher:
            yield publisher
    finally:
        await holder.leases.release(key, token)


async def test_joiner_on_another_replica_gets_every_event_then_the_rest_live(
    redis_url: str, model_version: str
) -> None:
    """Joining 0.5 s into a 1 s generation: every event so far at once, the rest live, the same end."""
    key = keyspace.entry_key(model_version, "abc")
    async with replicas(redis_url, model_version) as (holder, joiner):
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


async def test_a_generation_nobody_joins_writes_nothing(redis_url: str, model_version: str) -> None:
    key = keyspace.entry_key(model_version, "alone")
    async with (
        replicas(redis_url, model_version, count=1) as (holder,),
        holding(holder, key) as publisher,
    ):
        for i in range(100):
            publisher.publish(b"%d" % i)
        publisher.finish("completed")
        assert await holder.commands.client.exists(publisher.stream) == 0


async def test_the_stream_expires_after_its_end(redis_url: str, model_version: str) -> None:
    key = keyspace.entry_key(model_version, "ttl")
    async with replicas(redis_url, model_version, count=1, linger_s=2.0) as (holder,):
        client = holder.commands.client
        async with holding(holder, key) as publisher:
            publisher.publish(b"one")
            publisher.relay()
            assert await publisher.written()
            assert 29_000 < await client.pttl(publisher.stream) <= 30_000
            publisher.finish("cut")
        assert 1_000 < await client.pttl(publisher.stream) <= 2_000
        assert await client.xlen(publisher.stream) == 2


@pytest.mark.parametrize("end", ["failed", "cut"])
async def test_every_joiner_sees_the_same_abnormal_end(redis_url: str, model_version: str, end: str) -> None:
    key = keyspace.entry_key(model_version, end)
    async with (
        replicas(redis_url, model_version, count=3) as (holder, one, two),
        holding(holder, key) as publisher,
    ):
        publisher.publish(b"half")
        joins = [asyncio.create_task(collect(r.relay, key)) for r in (one, two)]
        await asyncio.sleep(0.1)
        publisher.finish(end, b"upstream went away")  # type: ignore[arg-type]
        results = await asyncio.gather(*joins)
    for events, _ in results:
        assert events == [Relayed("event", b"half"), Relayed(end, b"upstream went away")]


async def test_a_holder_that_leaves_unfinished_is_cut(redis_url: str, model_version: str) -> None:
    """The holder's generation raised out of its block: joiners see "cut", not a hang."""
    key = keyspace.entry_key(model_version, "raised")
    async with replicas(redis_url, model_version) as (holder, joiner):

        async def generation() -> None:
            async with holding(holder, key) as publisher:
                publisher.publish(b"half")
                await asyncio.sleep(0.2)
                raise RuntimeError("the upstream connection broke")

        broken = asyncio.create_task(generation())
        await asyncio.sleep(0.05)
        events, _ = await collect(joiner.relay, key)
        with pytest.raises(RuntimeError):
            await broken
    assert events == [Relayed("event", b"half"), Relayed("cut", b"")]


async def test_no_generation_in_progress_is_idle(redis_url: str, model_version: str) -> None:
    async with replicas(redis_url, model_version, count=1) as (joiner,):
        with pytest.raises(RelayLost) as lost:
            await collect(joiner.relay, keyspace.entry_key(model_version, "nobody"))
    assert lost.value.reason == "idle"


async def test_a_holder_that_dies_loses_its_joiners_once_its_lease_lapses(
    redis_url: str, model_version: str
) -> None:
    """No terminal event ever comes: the joiner gives up when the lease lapses, having had what there was."""
    key = keyspace.entry_key(model_version, "dies")
    async with replicas(redis_url, model_version, lease_ttl_s=0.5, block_s=0.2) as (holder, joiner):
        token = await holder.leases.try_acquire(key)
        assert isinstance(token, str)
        dead = holder.relay.publishing(key, token)  # never left: its process "died"
        publisher = await dead.__aenter__()
        publisher.publish(b"only")
        started = time.monotonic()
        with pytest.raises(RelayLost) as lost:
            await collect(joiner.relay, key)
        publisher.finish("completed")
        await dead.__aexit__(None, None, None)
    assert (lost.value.reason, lost.value.received) == ("ended", 1)
    assert time.monotonic() - started < 2.0


async def test_a_gap_is_never_passed_on(redis_url: str, model_version: str) -> None:
    key = keyspace.entry_key(model_version, "gap")
    async with replicas(redis_url, model_version) as (holder, joiner), holding(holder, key) as publisher:
        publisher.relay()
        for i in range(3):  # an entry each
            publisher.publish(b"%d" % i)
            assert await publisher.written()
        await holder.commands.client.xdel(publisher.stream, "0-2")
        with pytest.raises(RelayLost) as lost:
            await collect(joiner.relay, key)
        publisher.finish("completed")
    assert (lost.value.reason, lost.value.received) == ("gap", 1)


async def test_overflow_sends_joiners_to_the_stored_entry(redis_url: str, model_version: str) -> None:
    key = keyspace.entry_key(model_version, "long")
    async with (
        replicas(redis_url, model_version, max_events=5) as (holder, joiner),
        holding(holder, key) as publisher,
    ):
        for i in range(10):
            publisher.publish(b"%d" % i)
        publisher.finish("completed")
        with pytest.raises(RelayLost) as lost:
            await collect(joiner.relay, key)
        # The four events kept in one entry, written when the joiner asked, then the overflow.
        assert await holder.commands.client.xlen(publisher.stream) == 2
    assert (lost.value.reason, lost.value.received) == ("overflow", 4)


async def test_joins_past_the_readers_are_refused_at_once_and_leave_the_cache_its_connections(
    redis_url: str, model_version: str
) -> None:
    """Two readers: two joins block on their own connections, a third is "busy" at once, and the cache's
    commands (a pool of 8) go on meanwhile; a join that leaves hands its reader back."""
    key = keyspace.entry_key(model_version, "busy")
    async with (
        replicas(redis_url, model_version, readers=2) as (holder, joiner),
        holding(holder, key) as publisher,
    ):
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
    async with (
        replicas(private_redis.url, model_version) as (holder, joiner),
        holding(holder, key) as publisher,
    ):
        publisher.publish(b"before")
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
    async with replicas(redis_cluster.url, model_version) as (holder, joiner):
        token = await holder.leases.try_acquire(key)
        assert isinstance(token, str)
        assert redis_cluster.primary_for(keyspace.stream_key(key, token)) is redis_cluster.primary_for(key)
        generation = asyncio.create_task(generate(holder, key, token, count=20, every_s=0.01))
        await asyncio.sleep(0.05)
        events, first_s = await collect(joiner.relay, key)
        await generation
    assert [e.data for e in events[:-1]] == [b'{"token": %d}' % i for i in range(20)]
    assert events[-1].kind == "completed"
    assert first_s < 0.5
