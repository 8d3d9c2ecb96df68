"""A primary lost under steady load, measured: three replicas over a Redis Cluster or Sentinel set,
open-loop GETs over the demo pairs, the primary serving a hot key SIGKILLed or SIGSTOPped, and what
the requests saw. `tests/test_cluster.py` asserts on a `FailoverRun`; `benchmarks/failover.py`
reports one, so the test and the benchmark measure the same thing."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass

import aiohttp

from service.models.demo import DemoModel
from service.redis import keyspace
from tests.support.keys import pair_input
from tests.support.redis_cluster import RedisClusterNodes, SentinelSet
from tests.support.redis_server import RedisServer
from tests.support.service_process import ServiceProcess

PAIRS = sorted(DemoModel.pairs)  # 18 keys
Shared = RedisClusterNodes | SentinelSet


@dataclass(frozen=True, slots=True)
class Sent:
    at_s: float  # since the load started
    pair: str
    status: int
    cache: str
    latency_s: float


@dataclass(frozen=True)
class FailoverRun:
    """What one run measured; `back_at_s` is the failover + 2 s, from the start of the load."""

    mode: str
    how: str
    rate: float
    kill_at_s: float
    failover_s: float
    pair: str  # the hot pair the lost primary served
    sent: list[Sent]
    calls_during: float  # model calls of the whole fleet during the load
    local_after_back: float  # lookups answered by a replica's own copy from `back_at_s` on

    @property
    def back_at_s(self) -> float:
        return self.kill_at_s + self.failover_s + 2.0

    @property
    def statuses(self) -> dict[int, int]:
        return dict(Counter(s.status for s in self.sent))

    @property
    def worst_s(self) -> float:
        return max(s.latency_s for s in self.sent)

    @property
    def late(self) -> list[Sent]:
        return [s for s in self.sent if s.at_s >= self.back_at_s]

    @property
    def late_hits(self) -> int:
        return sum(s.cache == "HIT" for s in self.late)

    def line(self) -> str:
        return (
            f"{self.mode}: {len(self.sent)} requests at {self.rate:g}/s, primary {self.how} at "
            f"{self.kill_at_s:g} s, failover {self.failover_s:.2f} s; statuses {self.statuses}; slowest "
            f"{self.worst_s * 1000:.0f} ms; model calls during the load {self.calls_during:g} "
            f"({self.calls_during / len(PAIRS):.1f} per key); HITs from failover + 2 s: "
            f"{self.late_hits}/{len(self.late)}, of them answered by a replica's own copy: "
            f"{self.local_after_back:g}"
        )

    def as_dict(self) -> dict[str, object]:
        return {
            "mode": self.mode,
            "how": self.how,
            "requests": len(self.sent),
            "rate": self.rate,
            "failover_s": round(self.failover_s, 2),
            "non_2xx": sum(count for status, count in self.statuses.items() if not 200 <= status < 300),
            "slowest_ms": round(self.worst_s * 1000, 1),
            "model_calls": self.calls_during,
            "model_calls_per_key": round(self.calls_during / len(PAIRS), 2),
            "late_requests": len(self.late),
            "late_hits": self.late_hits,
            "late_local_answers": self.local_after_back,
        }


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


def total(fleet: list[ServiceProcess], metric: str) -> float:
    return sum(replica.metric(metric) for replica in fleet)


def hot_key(pair: str) -> str:
    return keyspace.entry_key(DemoModel.version, pair_input(pair).digest)


def victim_of(shared: Shared) -> tuple[RedisServer, str]:
    """The primary to lose and a hot pair it serves. In a cluster: the shard that also carries the
    events channel, so the replicas' subscriptions must come back too."""
    if isinstance(shared, SentinelSet):
        return shared.current_primary(), PAIRS[0]
    primary = shared.primary_for(keyspace.events_channel(DemoModel.version))
    pair = next(p for p in PAIRS if shared.primary_for(hot_key(p)) is primary)
    return primary, pair


def failed_over(shared: Shared, dead: RedisServer, pair: str) -> bool:
    if isinstance(shared, SentinelSet):
        return shared.primary_port() != dead.port
    return shared.primary_for(hot_key(pair)) is not dead and shared.healthy()


async def wait_failover(shared: Shared, dead: RedisServer, pair: str, timeout_s: float = 30.0) -> float:
    started = time.monotonic()
    while not await asyncio.to_thread(failed_over, shared, dead, pair):
        if time.monotonic() - started > timeout_s:
            raise TimeoutError(f"no failover within {timeout_s:g} s")
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def lose_primary_under_load(
    shared: Shared,
    fleet: list[ServiceProcess],
    how: str,
    *,
    rate: float = 100.0,
    duration_s: float = 12.0,
    kill_at_s: float = 3.0,
) -> FailoverRun:
    """Run the load over `fleet` (every key already warm), lose the primary at `kill_at_s` by `how`
    ("SIGKILL" or "SIGSTOP"), wait for the failover and measure."""
    calls_before = total(fleet, "predcache_model_calls_total")
    victim, pair = victim_of(shared)
    kill = asyncio.Event()
    urls = [replica.url for replica in fleet]
    load = asyncio.create_task(
        steady_load(urls, rate=rate, duration_s=duration_s, kill_at_s=kill_at_s, kill=kill)
    )
    await kill.wait()
    if how == "SIGKILL":
        victim.kill()
    else:
        victim.freeze()
    failover_s = await wait_failover(shared, victim, pair)
    # From the failover + 2 s on, every lookup should be answered by Redis again: none by a
    # replica's own copy (degraded mode), which would say HIT as well.
    await asyncio.sleep(2.0)
    if load.done():
        raise RuntimeError("the load ended before the failover + 2 s: make it longer")
    local_at_back = await asyncio.to_thread(total, fleet, "predcache_local_cache_answers_total")
    sent = await load
    local_after = await asyncio.to_thread(total, fleet, "predcache_local_cache_answers_total")
    return FailoverRun(
        mode="cluster" if isinstance(shared, RedisClusterNodes) else "sentinel",
        how=how,
        rate=rate,
        kill_at_s=kill_at_s,
        failover_s=failover_s,
        pair=pair,
        sent=sent,
        calls_during=total(fleet, "predcache_model_calls_total") - calls_before,
        local_after_back=local_after - local_at_back,
    )
