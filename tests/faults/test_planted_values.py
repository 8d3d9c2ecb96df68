"""Values planted in Redis under a prediction's key are never served: each is a miss, then overwritten."""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson
import pytest
from redis.asyncio import Redis

from service.caching.entry import CachedPrediction
from tests.faults.conftest import StartService
from tests.support.keys import pair_entry, pair_input, pair_key
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.redis

PAIR = "BTC-EUR"
# Small enough to plant cheaply; the service runs with it as CACHE_MAX_ENTRY_BYTES.
MAX_ENTRY_BYTES = 4096


def entry_for(key: str, pair: str, price: float, *, pad_to: int = 0) -> bytes:
    """A well-formed entry; `pad_to` pads its metadata with spaces to reach that many bytes."""
    raw = pair_entry(key, pair, price).encode()
    if pad_to > len(raw):
        meta, _, body = raw.partition(b"\n")
        raw = meta + b" " * (pad_to - len(raw)) + b"\n" + body
    return raw


@pytest.fixture
async def planter(server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(server.url)
    yield client
    await client.aclose()


def planted_values(key: str) -> dict[str, bytes]:
    other_key = key[: key.rindex(":") + 1] + pair_input("ETH-EUR").digest
    our_meta = pair_entry(key, PAIR, 1.0).encode().partition(b"\n")[0]
    return {
        "corrupt": b"\xff\xfe not json \x00\n{",
        "no-newline": b'{"key": "' + key.encode() + b'"}',
        "foreign-key": entry_for(other_key, "ETH-EUR", 1.0),  # another pair's entry copied over ours
        "foreign-input": entry_for(key, "ETH-EUR", 1.0),  # our key in the metadata, another pair's input
        "not-an-output": our_meta + b'\n{"pair": "BTC-EUR"}',  # our metadata, a body missing fields
        "empty": b"",
        "oversized": entry_for(key, PAIR, 1.0, pad_to=MAX_ENTRY_BYTES + 1),
        "wrong-types": orjson.dumps({"key": key, "at": "x", "model_s": [], "fresh_s": {}}) + b"\n{}",
        "resp-injection": b"+OK\r\n$-1\r\n*1\r\n$4\r\nPING\r\n",
    }


@pytest.mark.parametrize(
    "kind",
    [
        "corrupt",
        "no-newline",
        "foreign-key",
        "foreign-input",
        "not-an-output",
        "empty",
        "oversized",
        "wrong-types",
        "resp-injection",
    ],
)
async def test_a_planted_value_is_a_miss_and_is_overwritten(
    start_service: StartService, server: RedisServer, planter: Redis, model_version: str, kind: str
) -> None:
    key = pair_key(model_version, PAIR)
    await planter.set(key, planted_values(key)[kind])
    service = await start_service(server.url, cache_max_entry_bytes=MAX_ENTRY_BYTES)
    first = await service.get(PAIR)
    assert first.status == 200
    assert first.headers["X-Cache"] == "MISS"
    assert (first.json["pair"], first.json["predicted_price"]) == (PAIR, service.model.value(PAIR))
    assert service.model.total_calls == 1
    stored = await planter.get(key)
    assert isinstance(stored, bytes)
    assert CachedPrediction.decode(key, pair_input(PAIR).canonical, stored) is not None
    second = await service.get(PAIR)
    assert (second.headers["X-Cache"], second.body) == ("HIT", first.body)


async def test_a_well_formed_planted_entry_at_the_size_cap_is_served(
    start_service: StartService, server: RedisServer, planter: Redis, model_version: str
) -> None:
    """The cap is on size, not on source: an entry of exactly MAX_ENTRY_BYTES is still valid."""
    key = pair_key(model_version, PAIR)
    raw = entry_for(key, PAIR, 42.0, pad_to=MAX_ENTRY_BYTES)
    assert len(raw) == MAX_ENTRY_BYTES
    await planter.set(key, raw)
    service = await start_service(server.url, cache_max_entry_bytes=MAX_ENTRY_BYTES)
    reply = await service.get(PAIR)
    assert (reply.status, reply.headers["X-Cache"], reply.json["predicted_price"]) == (200, "HIT", 42.0)
    assert service.model.total_calls == 0
