"""The service over a Redis Cluster and over Sentinel: the same promises as on one Redis (one model
call per key for the fleet, invalidations reach every replica), and a primary killed or frozen under
steady load costs no request."""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import orjson
import pytest

from service import keyspace
from service.demo import DemoModel
from tests.conftest import MakeClient
from tests.support.keys import pair_input
from tests.support.models import CountingModel
from tests.support.redis_cluster import RedisClusterNodes, SentinelSet
from tests.support.redis_server import RedisServer
from tests.support.service_process import ServiceProcess, start_replicas
from tests.test_fleet import fire, total_model_calls

pytestmark = [pytest.mark.redis, pytest.mark.slow]

MODES = ["cluster", "sentinel"]
PAIRS = sorted(DemoModel.pairs)  # 18 keys
MODEL_LATENCY_S = 0.2
REDIS_TIMEOUT_S = 0.5
TOKEN = "s3cret"


@pytest.fixture(params=MODES)
def shared(request: pytest.FixtureRequest) -> RedisClusterNodes | SentinelSet:
    """A private Redis Cluster or Sentinel set, by the test's parameter."""
    fixture = "redis_cluster" if request.param == "cluster" else "redis_sentinel"
    shared: RedisClusterNodes | SentinelSet = request.getfixturevalue(fixture)
    return shared


async def test_cache_hits_collapses_and_invalidates_in_process(
    shared: RedisClusterNodes | SentinelSet, make_client: MakeClient, model_version: str
) -> None:
    """MISS then HIT, 50 concurrent cold requests make one call, DELETE /cache makes the next a MISS."""
    model = CountingModel(version=model_version, latency_s=0.1)
    client = await make_client(model=model, redis_url=shared.url, admin_token=TOKEN, near_ttl_s=0)
    assert (await client.get("/predict?pair=ETH-EUR")).headers["X-Cache"] == "MISS"
    assert (await client.get("/predict?pair=ETH-EUR")).headers["X-Cache"] == "HIT"
    responses = await asyncio.gather(*(client.get("/predict?pair=BTC-USD") for _ in range(50)))
    assert {r.status for r in responses} == {200}
    assert model.calls["BTC-USD"] == 1
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert (await client.delete("/cache", headers=auth)).status == 200
    assert (await client.get("/predict?pair=ETH-EUR")).headers["X-Cache"] == "MISS"
    ready = orjson.loads(await (await client.get("/readyz")).read())
    mode = "cluster" if isinstance(shared, RedisClusterNodes) else "sentinel"
    assert ready["cache"] == "ok"
    assert ready["redis"]["mode"] == mode
    assert ready["redis"]["answering"] == ready["redis"]["nodes"] >= 1


async def test_300_cold_requests_over_three_replicas_call_the_model_once(
    shared: RedisClusterNodes | SentinelSet,
) -> None:
    fleet = start_replicas(
        3, "--redis-url", shared.url, "--demo-model-latency", "0.5", "--redis-timeout", "1"
    )
    try:
        results = await fire([r.url for r in fleet], 300)
        assert {status for status, _, _ in results} == {200}
        assert len({body for _, body, _ in results}) == 1
        assert total_model_calls(fleet) == 1
    finally:
        for replica in fleet:
            replica.stop()


@dataclass(frozen=True, slots=True)
class Sent:
    at_s: float  # since the load started
    pair: str
    status: int
    cache: str
    latency_s: float


async def steady_load(
    urls: list[str], *, rate: float, duration_s: float, kill_at_s: float, kill: asyncio.Event
) -> list[Sent]:
    """Open-loop GETs at `rate` per second over `PAIRS` and `urls` for `duration_s`; sets `kill` at
    `kill_at_s`. A request that fails to connect or times out counts as status 0."""
    sent: list[Sent] = []
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        loop = asyncio.get_running_loop()
        started = loop.time()

        async def one(i: int, at_s: float) -> None:
            pair = PAIRS[i % len(PAIRS)]
            begun = loop.time()
            try:
                async with session.get(f"{urls[i % len(urls)]}/predict", params={"pair": pair}) as response:
                    await response.read()
                    status, cache = response.status, response.headers.get("X-Cache", "")
            except (aiohttp.ClientError, TimeoutError):
                status, cache = 0, ""
            sent.append(Sent(at_s, pair, status, cache, loop.time() - begun))

        tasks = []
        for i in range(round(rate * duration_s)):
            at_s = i / rate
            if not kill.is_set() and at_s >= kill_at_s:
                kill.set()
            await asyncio.sleep(max(0.0, started + at_s - loop.time()))
            tasks.append(asyncio.create_task(one(i, at_s)))
        await asyncio.gather(*tasks)
    return sent


def total_local_answers(fleet: list[ServiceProcess]) -> float:
    return sum(replica.metric("predcache_local_cache_answers_total") for replica in fleet)


def hot_key(pair: str) -> str:
    return keyspace.entry_key(DemoModel.version, pair_input(pair).digest)


def victim_of(shared: RedisClusterNodes | SentinelSet) -> tuple[RedisServer, str]:
    """The primary to kill and a hot pair it serves. In a cluster: the shard that also carries the
    events channel, so the replicas' subscriptions must come back too."""
    if isinstance(shared, SentinelSet):
        return shared.current_primary(), PAIRS[0]
    primary = shared.primary_for(keyspace.events_channel(DemoModel.version))
    pair = next(p for p in PAIRS if shared.primary_for(hot_key(p)) is primary)
    return primary, pair


def failed_over(shared: RedisClusterNodes | SentinelSet, dead: RedisServer, pair: str) -> bool:
    if isinstance(shared, SentinelSet):
        return shared.primary_port() != dead.port
    return shared.primary_for(hot_key(pair)) is not dead and shared.healthy()


async def wait_failover(shared: RedisClusterNodes | SentinelSet, dead: RedisServer, pair: str) -> float:
    started = time.monotonic()
    while not await asyncio.to_thread(failed_over, shared, dead, pair):
        assert time.monotonic() - started < 30, "no failover within 30 s"
        await asyncio.sleep(0.05)
    return time.monotonic() - started


@pytest.mark.parametrize("how", ["SIGKILL", "SIGSTOP"])
async def test_a_primary_lost_under_steady_load_costs_no_request(
    shared: RedisClusterNodes | SentinelSet, how: str
) -> None:
    """SIGKILL (or SIGSTOP: it stays connected but silent) the primary serving a hot key (and in a
    cluster the events channel) under 100 req/s on 18 keys over 3 replicas: every response is 200, none
    slower than the model + the Redis budget + 1 s, at most 2 model calls per key (the TTL outlasts
    the load), the cache hits again within 2 s of the failover, and an invalidation reaches every
    replica."""
    rate, duration_s, kill_at_s = 100.0, 12.0, 3.0
    fleet = start_replicas(
        3,
        *("--redis-url", shared.url, "--demo-model-latency", str(MODEL_LATENCY_S)),
        *("--redis-timeout", str(REDIS_TIMEOUT_S), "--ttl", "60", "--near-cache-seconds", "0"),
        *("--admin-token", TOKEN),
    )
    try:
        await fire([r.url for r in fleet], 1, pair=PAIRS[0])
        for pair in PAIRS:  # warm: every key cached before the load starts
            await fire([fleet[0].url], 1, pair=pair)
        calls_before = total_model_calls(fleet)
        victim, pair = victim_of(shared)
        kill = asyncio.Event()
        load = asyncio.create_task(
            steady_load(
                [r.url for r in fleet], rate=rate, duration_s=duration_s, kill_at_s=kill_at_s, kill=kill
            )
        )
        await kill.wait()
        if how == "SIGKILL":
            victim.kill()
        else:
            victim.freeze()
        failover_s = await wait_failover(shared, victim, pair)
        # From the failover + 2 s on, every lookup is answered by Redis again: none by a replica's own
        # copy (degraded mode), which would say HIT as well.
        await asyncio.sleep(2.0)
        assert not load.done(), "the load ended before the cache could be back"
        local_at_back = await asyncio.to_thread(total_local_answers, fleet)
        sent = await load
        local_after_back = await asyncio.to_thread(total_local_answers, fleet) - local_at_back
        calls_during = total_model_calls(fleet) - calls_before

        statuses = Counter(s.status for s in sent)
        worst_s = max(s.latency_s for s in sent)
        back_at_s = kill_at_s + failover_s + 2.0
        late = [s for s in sent if s.at_s >= back_at_s]
        late_hits = sum(s.cache == "HIT" for s in late)
        figures = (
            f"{type(shared).__name__}: {len(sent)} requests at {rate:g}/s, primary {how} at "
            f"{kill_at_s:g} s, failover {failover_s:.2f} s; statuses {dict(statuses)}; slowest "
            f"{worst_s * 1000:.0f} ms; model calls during the load {calls_during:g} "
            f"({calls_during / len(PAIRS):.1f} per key); HITs from failover + 2 s: {late_hits}/{len(late)}, "
            f"of them answered by a replica's own copy: {local_after_back:g}"
        )
        print(figures)
        if path := os.environ.get("PREDCACHE_FAILOVER_FIGURES"):
            with Path(path).open("a") as out:  # noqa: ASYNC230 - one line, after the load
                out.write(figures + "\n")
        assert statuses == {200: len(sent)}
        assert worst_s < MODEL_LATENCY_S + REDIS_TIMEOUT_S + 1.0
        assert calls_during <= 2 * len(PAIRS)
        assert late, "the load ended before the cache could be back"
        assert all(s.cache == "HIT" for s in late if s.pair == pair), "the hot key is not a hit again"
        assert late_hits / len(late) > 0.9
        assert local_after_back == 0

        # The subscriptions are back: an invalidation made on one replica reaches the others at once.
        async with aiohttp.ClientSession() as session:
            auth = {"Authorization": f"Bearer {TOKEN}"}
            assert (await session.delete(f"{fleet[0].url}/cache", headers=auth)).status == 200
            await asyncio.sleep(0.05)  # a pub/sub message's delay, far below the 1 s refresh
            for replica, asked in zip(fleet[1:], (pair, next(p for p in PAIRS if p != pair)), strict=True):
                response = await session.get(f"{replica.url}/predict", params={"pair": asked})
                assert response.headers["X-Cache"] == "MISS"
    finally:
        for replica in fleet:
            replica.stop()
