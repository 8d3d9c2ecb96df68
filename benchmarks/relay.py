"""The stream relay alone, over a private redis-server: `python -m benchmarks.relay [--trials N]`.

A holder publishes one event every 5 ms (200 tokens/s); a joiner on another replica (its own clients)
joins 1 s in. Reports the joiner's first event after joining (every event so far arrives in that read),
how late each later event reaches it after the holder published it, and the holder's CPU per event.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Sequence

import uvloop

from benchmarks.procs import RedisProcess
from service.metrics import Metrics
from service.redis import keyspace
from service.redis.breaker import CircuitBreaker
from service.redis.commands import RedisCommands
from service.redis.events import Events
from service.redis.lease import Leases
from service.redis.streams import StreamRelay, reader_client
from service.redis.topology import create_client

EVERY_S = 0.005
JOIN_AFTER_S = 1.0
AFTER_JOIN = 100  # live events measured per trial
CHUNK = b'{"object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":" token"}}]}'


def _relay(url: str) -> tuple[RedisCommands, Leases, Events, StreamRelay]:
    commands = RedisCommands(
        create_client(url, timeout_s=0.25, max_connections=8),
        metrics=Metrics(),
        timeout_s=0.25,
        breaker=CircuitBreaker(cooldown_s=1.0),
    )
    leases = Leases(commands, lease_ttl_s=2.0)
    events = Events(commands, channel=keyspace.events_channel("bench"))
    events.start()
    relay = StreamRelay(
        commands,
        leases,
        events,
        reader_client(url, timeout_s=0.25, readers=4),
        readers=4,
        ttl_s=30.0,
        max_events=10_000,
        max_bytes=1 << 22,
    )
    return commands, leases, events, relay


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _trial(
    holder: tuple[Leases, StreamRelay], joiner: StreamRelay, key: str
) -> tuple[float, int, list[float]]:
    """One generation joined 1 s in: ms to the first event, events before joining, ms late of each
    later one."""
    leases, relay = holder
    token = await leases.try_acquire(key)
    assert isinstance(token, str)
    published: list[float] = []

    async def generate() -> None:
        deadline = time.perf_counter() + JOIN_AFTER_S + AFTER_JOIN * EVERY_S * 1.5
        async with relay.publishing(key, token) as publisher:
            while time.perf_counter() < deadline:
                published.append(time.perf_counter())
                publisher.publish(CHUNK)
                await asyncio.sleep(EVERY_S)
            publisher.finish("completed")
        await leases.release(key, token)

    generation = asyncio.create_task(generate())
    await asyncio.sleep(JOIN_AFTER_S)
    joined = time.perf_counter()
    before = len(published)
    first_ms = 0.0
    live_ms: list[float] = []
    count = 0
    head = 0
    async for event in joiner.join(key):
        now = time.perf_counter()
        if count == 0:
            first_ms = (now - joined) * 1000
            head = len(published)
        elif event.kind == "event" and count >= head:
            live_ms.append((now - published[count]) * 1000)
        count += 1
    await generation
    return first_ms, before, live_ms


async def _cpu_per_event(relay: StreamRelay, leases: Leases, key: str, events: int) -> dict[str, float]:
    """The holder's CPU per event, nobody joining and one joiner elsewhere: publishing `events` 1 ms
    apart, less the same loop without publishing."""

    async def loop(publish: bool, joined: bool) -> float:
        token = await leases.try_acquire(key)
        assert isinstance(token, str)
        started = time.process_time()
        async with relay.publishing(key, token) as publisher:
            if joined:
                publisher.relay()  # what a joiner's request does
            for _ in range(events):
                if publish:
                    publisher.publish(CHUNK)
                await asyncio.sleep(0.001)
            publisher.finish("completed")
        await leases.release(key, token)
        return time.process_time() - started

    baseline = await loop(False, False)
    alone = await loop(True, False)
    joined = await loop(True, True)
    return {
        "nobody_joined": round((alone - baseline) / events * 1e6, 1),
        "joined": round((joined - baseline) / events * 1e6, 1),
    }


async def run(url: str, trials: int) -> dict[str, object]:
    holder = _relay(url)
    joiner = _relay(url)
    await asyncio.sleep(0.2)  # both subscribed to the events channel
    try:
        firsts: list[float] = []
        befores: list[int] = []
        lives: list[float] = []
        for i in range(trials):
            first_ms, before, live_ms = await _trial(
                (holder[1], holder[3]), joiner[3], keyspace.entry_key("bench", f"k{i}")
            )
            firsts.append(first_ms)
            befores.append(before)
            lives.extend(live_ms)
        cpu_us = await _cpu_per_event(holder[3], holder[1], keyspace.entry_key("bench", "cpu"), 2000)
    finally:
        for commands, _, events, relay in (holder, joiner):
            await relay.close()
            await events.close()
            await commands.close()
    return {
        "trials": trials,
        "events_before_join": round(statistics.median(befores)),
        "join_first_event_ms": {
            "p50": round(statistics.median(firsts), 2),
            "max": round(max(firsts), 2),
        },
        "live_event_ms": {
            "p50": round(_percentile(lives, 0.5), 2),
            "p99": round(_percentile(lives, 0.99), 2),
            "events": len(lives),
        },
        "holder_cpu_us_per_event": cpu_us,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10)
    args = parser.parse_args(argv)
    with RedisProcess() as redis:
        figures = uvloop.run(run(redis.url, args.trials))
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
