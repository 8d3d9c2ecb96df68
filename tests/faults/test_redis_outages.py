"""Redis refused, frozen, slowed and restarted under load: every request is still answered, in time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest

from tests.faults.conftest import (
    BREAKER_COOLDOWN_S,
    LOOP_ALLOWANCE_S,
    REDIS_TIMEOUT_S,
    Reply,
    Service,
    StartService,
)
from tests.support.redis_server import RedisServer
from tests.support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.redis

# Longer than the Redis budget: every request of a wave reaches single-flight while its call runs.
MODEL_LATENCY_S = 0.1
PAIRS = ("BTC-EUR", "ETH-EUR", "SOL-USD", "XRP-GBP")
# The cache's time budget plus the model's.
REQUEST_BOUND_S = REDIS_TIMEOUT_S + MODEL_LATENCY_S + LOOP_ALLOWANCE_S


async def wave(service: Service, pairs: tuple[str, ...] = PAIRS, per_pair: int = 5) -> list[Reply]:
    """`per_pair` concurrent requests for each pair; checks the model ran at most once per pair."""
    before = service.model.total_calls
    replies = await asyncio.gather(*(service.get(pair) for pair in pairs for _ in range(per_pair)))
    assert service.model.total_calls - before <= len(pairs), "concurrent misses for one key share one call"
    for pair, reply in zip([p for p in pairs for _ in range(per_pair)], replies, strict=True):
        assert reply.status == 200, (pair, reply)
        assert reply.json["pair"] == pair
        assert reply.json["predicted_price"] == service.model.value(pair)
    return replies


async def run_outage(
    service: Service,
    *,
    fault: Callable[[], Awaitable[None] | None],
    recover: Callable[[], Awaitable[None] | None],
    outage_s: float = 1.2,
    bound_s: float = REQUEST_BOUND_S,
) -> None:
    """Warm the cache, inject the fault for `outage_s` under load, recover; check the invariants."""
    service.model.latency_s = MODEL_LATENCY_S
    await wave(service)
    assert service.model.total_calls == len(PAIRS)  # model calls = distinct keys
    hits = await wave(service)
    assert {r.headers["X-Cache"] for r in hits} == {"HIT"}

    elapsed_s: list[float] = []  # not the replies: thousands of them would slow the collector
    if (pending := fault()) is not None:
        await pending
    fault_ends = time.monotonic() + outage_s
    while time.monotonic() < fault_ends:
        elapsed_s += [reply.elapsed_s for reply in await wave(service)]
    probes_while_down = [t for t in service.breaker.probes if t < fault_ends]
    slowest = max(elapsed_s)
    assert slowest <= bound_s, f"slowest request {slowest:.3f} s"
    # One probe per cool-down at most (the first failures open the breaker at the fault's start).
    assert len(probes_while_down) <= outage_s / BREAKER_COOLDOWN_S + 1

    if (pending := recover()) is not None:
        await pending
    recovered_at = time.monotonic()
    while True:
        reply = await service.get(PAIRS[0])
        assert reply.status == 200
        # Local copies answer hits during the outage too: caching resumes when Redis answers again.
        if reply.headers["X-Cache"] == "HIT" and service.breaker.is_closed:
            break
        assert time.monotonic() - recovered_at < 1.0, "Redis did not serve again within a second of recovery"
        await asyncio.sleep(0.02)


async def test_redis_refused(start_service: StartService, proxy: TcpProxy) -> None:
    """Connections reset and refused: every request gets 200 within budget, and caching resumes."""
    service = await start_service(proxy.url_for())

    def fault() -> None:
        proxy.refuse()
        proxy.reset_all()

    await run_outage(service, fault=fault, recover=proxy.accept)


async def test_redis_frozen(start_service: StartService, server: RedisServer) -> None:
    """SIGSTOP: connections hang instead of failing; the budget and the breaker keep requests fast."""
    service = await start_service(server.url)
    await run_outage(service, fault=server.freeze, recover=server.thaw)


async def test_redis_slowed_to_300_ms(start_service: StartService, proxy: TcpProxy) -> None:
    """A 300 ms Redis is as good as none: requests do not wait for it."""
    service = await start_service(proxy.url_for())

    def slow() -> None:
        proxy.latency_s = 0.3

    def fast() -> None:
        proxy.latency_s = 0.0

    await run_outage(service, fault=slow, recover=fast)


async def test_redis_restarted_mid_run(start_service: StartService, server: RedisServer) -> None:
    """Killed, then back empty on the same port after a while: no error, and the cache refills."""
    service = await start_service(server.url)

    async def kill() -> None:
        server.kill()

    async def restart() -> None:
        await asyncio.to_thread(server.restart)

    await run_outage(service, fault=kill, recover=restart)


async def test_a_dead_redis_gets_at_most_one_connection_attempt_per_cool_down(
    start_service: StartService, server: RedisServer, proxy: TcpProxy
) -> None:
    """While Redis is down nothing in the service reconnects faster than the breaker's cool-down: not
    the request path, and not the pub/sub reader of fleet events either."""
    cooldown_s, down_s = 1.0, 2.5
    service = await start_service(proxy.url_for(), breaker_cooldown_s=cooldown_s)
    service.model.latency_s = MODEL_LATENCY_S
    await wave(service)
    server.stop()  # the proxy still accepts, then resets: every attempt is counted there
    await wave(service)  # the requests already on their way fail together and open the breaker
    assert not service.breaker.is_closed
    opened_before = proxy.connections_opened
    down_until = time.monotonic() + down_s
    while time.monotonic() < down_until:
        await wave(service)
        await asyncio.sleep(0.05)
    attempts = proxy.connections_opened - opened_before
    # One probe per cool-down, each on a new connection, and nothing else.
    assert attempts <= down_s / cooldown_s + 1, f"{attempts} connection attempts in {down_s} s"
