"""A breaker per node in a Redis Cluster: a shard whose primary and replica both stop answering turns
the cache off for its own keys only, while the other shards' keys keep hitting in Redis."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import orjson
import pytest
import redis
from aiohttp.test_utils import TestClient

from service.models.demo import DemoModel
from service.redis import keyspace
from tests.conftest import MakeClient, no_redis
from tests.support.keys import pair_key
from tests.support.models import CountingModel
from tests.support.redis_cluster import RedisClusterNodes, wait_until
from tests.support.redis_server import LOOPBACK

pytestmark = [pytest.mark.redis, pytest.mark.slow]

PAIRS = sorted(DemoModel.pairs)  # 18 keys, over the 3 shards
MODEL_LATENCY_S = 0.05
# As make_client's default: on a busy CI machine a healthy node can take far longer than usual.
REDIS_TIMEOUT_S = 1.0


@pytest.fixture
def sparse_cluster() -> Iterator[RedisClusterNodes]:
    """A 6-node cluster whose healthy shards keep answering while a whole shard is down."""
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        no_redis("no redis-server and redis-cli on PATH")
    with RedisClusterNodes(full_coverage=False) as cluster:
        yield cluster


async def get(client: TestClient, pair: str) -> tuple[str, int, str, float]:  # type: ignore[type-arg]
    # Through the session: the test client would keep every one of these responses.
    started = time.monotonic()
    async with client.session.get(client.make_url("/predict"), params={"pair": pair}) as response:
        await response.read()
        return pair, response.status, response.headers.get("X-Cache", ""), time.monotonic() - started


async def metric(client: TestClient, name: str) -> float:  # type: ignore[type-arg]
    text = await (await client.get("/metrics")).text()
    return next(float(line.split()[1]) for line in text.splitlines() if line.startswith(name + " "))


async def test_a_frozen_shard_turns_off_the_cache_for_its_own_keys_only(
    sparse_cluster: RedisClusterNodes, make_client: MakeClient, model_version: str
) -> None:
    """SIGSTOP one shard's primary and replica: for 6 s (past the cluster's 2 s node timeout) every
    request is 200, the other shards' keys are HITs read from Redis (not from the replica's own copy),
    also in a batch over every shard, the frozen shard's keys answer from the replica's copy within the
    model + Redis budget, only one breaker opened, /readyz says degraded and names it; once the shard
    is thawed its keys hit in Redis again."""
    cluster = sparse_cluster
    model = CountingModel(version=model_version, latency_s=MODEL_LATENCY_S)
    client = await make_client(
        model=model, redis_url=cluster.url, redis_timeout_s=REDIS_TIMEOUT_S, near_ttl_s=0, ttl_s=60
    )
    for pair in PAIRS:
        assert (await get(client, pair))[1] == 200
    # Every key's copy in place in the replica (kept from its fill, or read back).
    for _ in range(50):
        await asyncio.sleep(0.1)
        replies = await asyncio.gather(*(get(client, pair) for pair in PAIRS))
        assert {cache for _, _, cache, _ in replies} == {"HIT"}
        ready = orjson.loads(await (await client.get("/readyz")).read())
        if ready["local_cache"]["entries"] == len(PAIRS):
            break
    assert ready["local_cache"]["entries"] == len(PAIRS)
    calls_warm = model.total_calls

    # The victim shard: not the one carrying the events channel and the model-wide generation.
    by_primary = {pair: cluster.primary_for(pair_key(model_version, pair)).port for pair in PAIRS}
    events_port = cluster.primary_for(keyspace.events_channel(model_version)).port
    victim = next(
        node for node in cluster.primaries() if node.port != events_port and node.port in by_primary.values()
    )
    dead = [pair for pair in PAIRS if by_primary[pair] == victim.port]
    live = [pair for pair in PAIRS if by_primary[pair] != victim.port]
    assert dead
    assert live
    replica = cluster.replica_of(victim)
    local_before = await metric(client, "predcache_local_cache_answers_total")
    victim.freeze()
    replica.freeze()

    sent: list[tuple[str, int, str, float]] = []
    started = time.monotonic()
    while time.monotonic() - started < 6.0:
        sent += await asyncio.gather(*(get(client, pair) for pair in PAIRS))
        await asyncio.sleep(0.2)
    ready = orjson.loads(await (await client.get("/readyz")).read())
    local_during = await metric(client, "predcache_local_cache_answers_total") - local_before
    # A batch over every shard: one MGET per node; the frozen one's keys alone come from local copies.
    local_before = await metric(client, "predcache_local_cache_answers_total")
    response = await client.post("/predict/batch", json={"inputs": [{"pair": pair} for pair in PAIRS]})
    results = orjson.loads(await response.read())["results"]
    assert response.status == 200
    assert [r["status"] for r in results] == [200] * len(PAIRS)
    assert {r["cache"] for r in results} == {"HIT"}
    assert await metric(client, "predcache_local_cache_answers_total") == local_before + len(dead)
    # Only the healthy shards now: every lookup answered by Redis itself.
    local_before = await metric(client, "predcache_local_cache_answers_total")
    hits_before = await metric(client, 'predcache_cache_lookups_total{result="hit"}')
    live_only = await asyncio.gather(*(get(client, pair) for pair in live * 3))
    assert await metric(client, "predcache_local_cache_answers_total") == local_before
    assert await metric(client, 'predcache_cache_lookups_total{result="hit"}') == hits_before + len(live_only)

    assert {status for _, status, _, _ in [*sent, *live_only]} == {200}
    assert {cache for pair, _, cache, _ in [*sent, *live_only] if pair in live} == {"HIT"}
    dead_sent = [s for s in sent if s[0] in dead]
    # The frozen shard's keys were answered from the replica's own copies (degraded mode), and the
    # healthy shards' keys never were.
    assert local_during <= len(dead_sent)
    assert max(latency for *_, latency in dead_sent) < MODEL_LATENCY_S + REDIS_TIMEOUT_S + 1.0
    assert model.total_calls == calls_warm
    assert await metric(client, "predcache_redis_breaker_opened_total") == 1
    assert ready["cache"] == "degraded"
    assert ready["redis"]["mode"] == "cluster"
    assert ready["redis"]["breakers_open"] == [f"127.0.0.1:{victim.port}"]

    victim.thaw()
    replica.thaw()
    deadline = time.monotonic() + 15.0
    while True:
        local_before = await metric(client, "predcache_local_cache_answers_total")
        replies = await asyncio.gather(*(get(client, pair) for pair in dead))
        if await metric(client, "predcache_local_cache_answers_total") == local_before:
            break
        assert time.monotonic() < deadline, "the thawed shard's keys are not read from Redis again"
        await asyncio.sleep(0.2)
    assert {(status, cache) for _, status, cache, _ in replies} == {(200, "HIT")}
    ready = orjson.loads(await (await client.get("/readyz")).read())
    assert ready["cache"] == "ok"
    assert ready["redis"]["breakers_open"] == []


@pytest.mark.parametrize("before", ["no node running", "nodes not yet joined"])
async def test_a_service_started_before_its_cluster_caches_once_the_cluster_is_up(
    make_client: MakeClient, model_version: str, before: str
) -> None:
    """Started while no node answers, or while the nodes answer but form no cluster yet (a map that
    names no node), the service answers from the model; once the cluster has formed, the slot map
    read in the background brings the cache back: a key is stored, then read from Redis."""
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        no_redis("no redis-server and redis-cli on PATH")
    cluster = RedisClusterNodes()  # its ports are chosen, nothing listens on them yet
    try:
        if before == "nodes not yet joined":
            await asyncio.to_thread(cluster.start_nodes)
        client = await make_client(
            model=CountingModel(version=model_version),
            redis_url=cluster.url,
            redis_timeout_s=REDIS_TIMEOUT_S,
            near_ttl_s=0,
        )
        assert (await get(client, "ETH-EUR"))[1] == 200
        await asyncio.to_thread(cluster.start if before == "no node running" else cluster.form)
        deadline = time.monotonic() + 15.0
        for pair in PAIRS:
            writes = await metric(client, "predcache_cache_writes_total")
            first = await get(client, pair)
            local = await metric(client, "predcache_local_cache_answers_total")
            second = await get(client, pair)
            assert (first[1], second[1]) == (200, 200)
            stored = await metric(client, "predcache_cache_writes_total") == writes + 1
            from_redis = await metric(client, "predcache_local_cache_answers_total") == local
            if stored and from_redis and second[2] == "HIT":
                break
            assert time.monotonic() < deadline, "the cache is not back within 15 s of the cluster"
            await asyncio.sleep(0.5)
        else:
            pytest.fail("the cache did not come back")
        # The key above may be on a shard the first map named while another shard's slots were not
        # yet in it (the map was read while the cluster formed), or another shard's breaker may have
        # opened while it formed (which only a request for one of its keys probes): whole within the
        # same deadline, every pair asked meanwhile.
        ready = await readyz_once_ok(
            client, deadline, poke=lambda: asyncio.gather(*(get(client, p) for p in PAIRS))
        )
        # The three primaries at least: the map may have been read before the replicas attached.
        assert ready["redis"]["answering"] == ready["redis"]["nodes"] >= 3
    finally:
        cluster.close()


async def readyz_once_ok(
    client: TestClient,  # type: ignore[type-arg]
    deadline: float,
    poke: Callable[[], Awaitable[object]] | None = None,
) -> dict[str, Any]:
    """/readyz's body once it says the cache is "ok", awaiting `poke()` before each retry; fails the
    test if it does not by `deadline`."""
    while True:
        ready: dict[str, Any] = orjson.loads(await (await client.get("/readyz")).read())
        if ready["cache"] == "ok":
            return ready
        assert time.monotonic() < deadline, f"/readyz still says {ready}"
        if poke is not None:
            await poke()
        await asyncio.sleep(0.1)


def _cluster(port: int, *args: str | int) -> None:
    """`CLUSTER <args>` on the node at `port`."""
    client = redis.Redis(host=LOOPBACK, port=port, socket_timeout=2.0)
    try:
        client.cluster(*args)
    finally:
        client.close()


def _slots_assigned(ports: list[int]) -> set[int]:
    """How many slots each of these nodes sees assigned, e.g. {16384} when they all agree on a map."""
    seen = set()
    for port in ports:
        client = redis.Redis(host=LOOPBACK, port=port, socket_timeout=2.0, decode_responses=True)
        try:
            info = client.cluster("info")
            seen.add(int(info["cluster_slots_assigned"]) if int(info["cluster_known_nodes"]) == 3 else -1)
        finally:
            client.close()
    return seen


async def test_a_slot_map_read_while_a_shard_had_no_slots_is_read_again_without_a_request_for_them(
    make_client: MakeClient, model_version: str
) -> None:
    """The service reads its first slot map while one of three primaries serves no slot yet (a
    cluster being formed); that primary then takes its slots. No request asks for one of its keys,
    yet within a few seconds /readyz says the cache is "ok": the service re-reads a partial map."""
    if shutil.which("redis-server") is None:
        no_redis("no redis-server on PATH")
    cluster = RedisClusterNodes(primaries=2, full_coverage=False)  # four nodes; three are started
    nodes = cluster.nodes[:3]
    ports = [node.port for node in nodes]
    try:
        for node in nodes:
            await asyncio.to_thread(node.start)
        await asyncio.to_thread(_cluster, ports[0], "ADDSLOTSRANGE", 0, 5460)
        await asyncio.to_thread(_cluster, ports[1], "ADDSLOTSRANGE", 5461, 10922)
        for port in ports[1:]:
            await asyncio.to_thread(_cluster, ports[0], "MEET", LOOPBACK, port)
        await asyncio.to_thread(wait_until, lambda: _slots_assigned(ports) == {10923}, 20.0, "two shards")
        client = await make_client(
            model=CountingModel(version=model_version),
            redis_url=f"redis+cluster://{LOOPBACK}:{ports[0]}",
            redis_timeout_s=REDIS_TIMEOUT_S,
        )
        ready = orjson.loads(await (await client.get("/readyz")).read())
        assert ready["cache"] == "degraded"
        await asyncio.to_thread(_cluster, ports[2], "ADDSLOTSRANGE", 10923, 16383)
        await asyncio.to_thread(wait_until, lambda: _slots_assigned(ports) == {16384}, 20.0, "three shards")
        ready = await readyz_once_ok(client, time.monotonic() + 5.0)
        assert ready["redis"]["nodes"] == 3
    finally:
        cluster.close()
