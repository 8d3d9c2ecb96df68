"""Redis answering with errors rather than failing: out of memory, read-only replica, still loading."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from tests.faults.conftest import StartService
from tests.support.redis_server import LOOPBACK, RedisServer, free_port

pytestmark = pytest.mark.redis

PAIRS = ("BTC-EUR", "ETH-USD", "ADA-GBP")


async def all_answered(start_service: StartService, url: str, rounds: int = 3) -> None:
    """Concurrent rounds over PAIRS: every request 200 with its own pair's price."""
    service = await start_service(url)
    service.model.latency_s = 0.02
    for _ in range(rounds):
        replies = await asyncio.gather(*(service.get(pair) for pair in PAIRS for _ in range(4)))
        for pair, reply in zip([p for p in PAIRS for _ in range(4)], replies, strict=True):
            assert reply.status == 200, reply
            assert reply.json["predicted_price"] == service.model.value(pair)
    # Redis refused the writes, so each round computed again, but once per pair only.
    assert service.model.total_calls <= rounds * len(PAIRS)


@pytest.fixture
async def admin(server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(server.url)
    yield client
    await client.aclose()


async def test_out_of_memory_under_noeviction(
    start_service: StartService, server: RedisServer, admin: Redis
) -> None:
    await admin.config_set("maxmemory-policy", "noeviction")
    await admin.config_set("maxmemory", 1)  # below what an empty server uses: every write is refused
    with pytest.raises(Exception, match="maxmemory"):
        await admin.set("probe", "x")
    await all_answered(start_service, server.url)


async def test_read_only_replica(start_service: StartService, server: RedisServer, admin: Redis) -> None:
    # A replica of a master that is not there: reads answer (stale data allowed), writes get READONLY.
    await admin.config_set("replica-read-only", "yes")
    await admin.replicaof(LOOPBACK, free_port())
    try:
        with pytest.raises(Exception, match="read only replica"):
            await admin.set("probe", "x")
        await all_answered(start_service, server.url)
    finally:
        await admin.replicaof("NO", "ONE")


def _commands_in(buffer: bytearray) -> int:
    """Remove the complete RESP commands at the start of `buffer` and return how many there were."""
    count = 0
    while True:
        end = _command_end(bytes(buffer))
        if end is None:
            return count
        del buffer[:end]
        count += 1


def _command_end(data: bytes) -> int | None:
    """Where the RESP array (of bulk strings) starting `data` ends, or None if it is incomplete."""
    line_end = data.find(b"\r\n")
    if line_end < 0 or not data.startswith(b"*"):
        return None
    position = line_end + 2
    for _ in range(int(data[1:line_end])):
        size_end = data.find(b"\r\n", position)
        if size_end < 0:
            return None
        position = size_end + 2 + int(data[position + 1 : size_end]) + 2
        if position > len(data):
            return None
    return position


@pytest.fixture
async def loading_redis() -> AsyncIterator[str]:
    """A Redis stand-in that answers every command with LOADING, as Redis does while it loads its data."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        buffer = bytearray()
        with contextlib.suppress(OSError):
            while chunk := await reader.read(65536):
                buffer += chunk
                writer.write(b"-LOADING Redis is loading the dataset in memory\r\n" * _commands_in(buffer))
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, LOOPBACK, 0)
    port = server.sockets[0].getsockname()[1]
    yield f"redis://{LOOPBACK}:{port}/0"
    server.close()
    await server.wait_closed()


async def test_loading(start_service: StartService, loading_redis: str) -> None:
    await all_answered(start_service, loading_redis)
