"""Memory within its settings: what a byte bound counts is what the process holds (traced with
tracemalloc), the embedded cache is bounded in bytes, and what is kept for a request or an entry
costs its own size, not a buffer's."""

from __future__ import annotations

import gc
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import aiohttp
import orjson
from multidict import MultiDict
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel

from examples.price_forecaster import ForecastQuery
from service.caching.backends import MemoryBackend, entry_bytes
from service.caching.entry import ZERO, CachedPrediction, Generation
from service.caching.near_cache import NearCache, copy_bytes
from service.http.responses import HitHeaders
from service.models.inputs import MEMO_MAX_BYTES, InputCodec
from service.settings.config import Settings
from tests.conftest import MakeClient

KIB = 1024
MIB = 1024 * KIB


@contextmanager
def traced() -> Iterator[Callable[[], int]]:
    """Bytes allocated inside the block and still alive, as `grown()` (tracemalloc: what was asked
    of the allocators, so a bound that covers it covers live objects)."""
    gc.collect()
    tracemalloc.start()
    start = tracemalloc.get_traced_memory()[0]
    try:
        yield lambda: tracemalloc.get_traced_memory()[0] - start
    finally:
        tracemalloc.stop()


def prediction(i: int, body_bytes: int = 150) -> CachedPrediction:
    """A cached prediction as the cache holds one: distinct key, input, body and times."""
    head = b'{"key":%d,"label":"' % i
    body = head + b"x" * max(0, body_bytes - len(head) - 2) + b'"}'
    now = time.time() + i
    now_ms = int(now * 1000)  # generations start from the wall clock in milliseconds
    return CachedPrediction(
        f"predcache:{{test-1:{i:032x}}}",
        b'{"key":%d}' % i,
        body,
        now,
        now / 1e9,
        now / 1e6,
        now / 1e7,
        Generation(now_ms, now_ms + i),
    )


def test_the_near_cache_counts_all_the_memory_its_copies_hold() -> None:
    """NEAR_CACHE_MAX_BYTES counts a copy's objects and bookkeeping, not its body's length: what it
    counts covers what is alive, and is not far above it (else the bound would waste memory)."""
    near = NearCache(ttl_s=60, max_entries=1_000_000, max_bytes=1 << 40)
    with traced() as grown:
        for i in range(5_000):
            near.remember(entry := prediction(i), entry.generation, near.epoch)
        held = grown()
    assert held <= near.memory_bytes <= 1.35 * held
    assert near.memory_bytes == sum(copy_bytes(prediction(i)) for i in range(5_000))


def test_the_near_cache_stays_within_its_byte_bound_in_memory() -> None:
    """Twenty times more small predictions than NEAR_CACHE_MAX_BYTES holds: the memory they leave
    alive stays within it, the oldest copies gone."""
    near = NearCache(ttl_s=60, max_entries=1_000_000, max_bytes=256 * KIB)
    with traced() as grown:
        for i in range(6_000):
            near.remember(entry := prediction(i), entry.generation, near.epoch)
        held = grown()
    assert near.memory_bytes <= 256 * KIB
    assert held <= 256 * KIB
    assert near.get(prediction(0).key) is None
    assert near.get(prediction(5_999).key) is not None


def test_beside_the_embedded_cache_a_copy_goes_once_it_is_no_longer_trusted() -> None:
    """The embedded cache cannot become unreachable: its near-cache keeps a copy only while it is
    trusted, never a second copy of every entry; a shared cache's near-cache keeps it for outages."""
    embedded = NearCache(ttl_s=0.05, max_entries=100, max_bytes=1 * MIB, keep_for_outages=False)
    shared = NearCache(ttl_s=0.05, max_entries=100, max_bytes=1 * MIB)
    for near in (embedded, shared):
        near.remember(prediction(1), ZERO, near.epoch)
    time.sleep(0.06)
    for near in (embedded, shared):
        near.remember(prediction(2), ZERO, near.epoch)
    assert embedded.get(prediction(1).key) is None
    assert embedded.memory_bytes == copy_bytes(prediction(2))
    assert shared.get(prediction(1).key) is not None
    assert len(shared) == 2


async def test_the_memory_backend_evicts_least_recently_used_by_bytes() -> None:
    """CACHE_MAX_BYTES: past it the least recently used entries go, whatever their count."""
    value = b"v" * 10_000
    cache = MemoryBackend(1_000, max_bytes=2 * entry_bytes("a", value) + 100)
    await cache.set("a", value, 60)
    await cache.set("b", value, 60)
    await cache.get_many(["a"])
    await cache.set("c", value, 60)
    assert await cache.get_many(["a", "b", "c"]) == [value, None, value]
    assert cache.memory_bytes == 2 * entry_bytes("a", value) <= cache.max_bytes
    await cache.delete("a")
    assert cache.memory_bytes == entry_bytes("c", value)


async def test_a_value_larger_than_the_memory_backend_is_refused_and_evicts_nothing() -> None:
    cache = MemoryBackend(1_000, max_bytes=64 * KIB)
    await cache.set("small", b"1", 60)
    assert not await cache.set("large", b"x" * 64 * KIB, 60)
    assert await cache.get_many(["small", "large"]) == [b"1", None]


async def test_the_memory_backend_stays_within_its_byte_bound_in_memory() -> None:
    """200 KB values, a hundred of them, under a 4 MiB bound: what stays alive is within 4 MiB, and
    what the backend counts covers it."""
    cache = MemoryBackend(1_000_000, max_bytes=4 * MIB)
    with traced() as grown:
        for i in range(100):
            await cache.set(f"predcache:{{test-1:{i:032x}}}", bytes([i]) * 200_000, 60)
        held = grown()
    assert held <= cache.memory_bytes <= 4 * MIB
    assert 15 <= len(cache) <= 20


def test_a_long_query_string_is_not_remembered() -> None:
    """Distinct 32 KB query strings for one input (padding `&`s are not fields): the input memo
    keeps none of them, where it kept every one (4,000 of them: +124 MiB)."""
    codec = InputCodec(ForecastQuery)
    query = MultiDict([("pair", "BTC-USD")])
    with traced() as grown:
        for i in range(500):
            codec.from_query(query, raw=f"pair=BTC-USD&n={i}" + "&" * 32_000)
        held = grown()
    assert held < 256 * KIB


def test_the_input_memo_stays_within_its_byte_bound() -> None:
    """Inputs of the largest remembered size, more than the memo holds: what it keeps alive stays
    within MEMO_MAX_BYTES."""
    codec = InputCodec(ForecastQuery)
    query = MultiDict([("pair", "BTC-USD")])
    with traced() as grown:
        for i in range(6_000):
            codec.from_query(query, raw=f"pair=BTC-USD&n={i:04d}" + "&" * 1000)
        held = grown()
    assert held <= MEMO_MAX_BYTES


def test_a_canonical_input_costs_its_own_size() -> None:
    """orjson returns a buffer of at least 4 KiB for any result; an input kept by the memo and the
    caches is copied to its own size."""
    codec = InputCodec(ForecastQuery)
    with traced() as grown:
        kept = [
            codec.canonical(ForecastQuery(pair="BTC-USD", horizon_minutes=i % 60 + 1)) for i in range(1000)
        ]
        held = grown()
    assert held < 1000 * 128
    assert kept[0] == orjson.dumps({"horizon_minutes": 1, "pair": "BTC-USD"}, option=orjson.OPT_SORT_KEYS)


def test_hit_headers_do_not_keep_an_entry_alive() -> None:
    """The hit-header memo keeps an entry's times, not the entry: a prediction the caches let go
    is freed, however large."""
    headers = HitHeaders(grace_s=5, clock=time.time)
    with traced() as grown:
        entry = prediction(1, body_bytes=1 * MIB)
        assert headers(entry)["X-Cache"] == "HIT"
        del entry
        held = grown()
    assert held < 64 * KIB


def test_hit_headers_past_their_tick_are_not_kept() -> None:
    """The memo holds the headers that may still be served (about the last second's hits), not one
    set per key ever hit: 1,000 keys hit once, then one more a few seconds later."""
    now = [1000.0]
    headers = HitHeaders(grace_s=5, clock=lambda: now[0])

    def fresh(i: int) -> CachedPrediction:
        return CachedPrediction(f"k{i}", b"{}", b"{}", now[0] - 0.5, 0.1, 60.0, 50.0, ZERO)

    for i in range(1000):
        headers(fresh(i))
    assert len(headers) == 1000
    now[0] += 3
    assert headers(fresh(1000))["Age"] == "0"
    assert len(headers) == 1


class Key(BaseModel):
    key: int


class Labelled(BaseModel):
    key: int
    label: str


class LargeModel:
    """Any integer key, at once, a body of `body_bytes`."""

    version = "test-large-1"
    Input = Key
    Output = Labelled

    def __init__(self, body_bytes: int) -> None:
        self.body_bytes = body_bytes

    async def predict(self, query: Key) -> Labelled:
        return Labelled(key=query.key, label="x" * self.body_bytes)


async def test_the_embedded_cache_holds_no_more_than_cache_max_bytes(make_client: MakeClient) -> None:
    """CACHE_MAX_BYTES=2 MiB and 100 KB predictions, 60 of them: the embedded cache, its near-cache
    copies included, holds at most 2 MiB, and the memory the service keeps is within it plus its
    fixed memos; every prediction was still served."""
    client = await make_client(model=LargeModel(100_000), cache_max_bytes=2 * MIB, ttl_s=60)
    # Not the test client, which keeps every response (and its body) until the test ends.
    async with aiohttp.ClientSession() as session:
        await (await session.get(client.make_url("/predict"), params={"key": "-1"})).read()
        with traced() as grown:
            for key in range(60):
                async with session.get(client.make_url("/predict"), params={"key": str(key)}) as response:
                    assert response.status == 200
                    assert (await response.json())["key"] == key
            held = grown()
    memory = (await (await client.get("/readyz")).json())["memory"]
    assert memory["embedded_cache_bytes"] + memory["near_cache_bytes"] <= 2 * MIB
    scraped = {
        sample.labels["cache"]: sample.value
        for family in text_string_to_metric_families(await (await client.get("/metrics")).text())
        for sample in family.samples
        if sample.name == "predcache_cache_memory_bytes"
    }
    assert scraped == {"near": memory["near_cache_bytes"], "embedded": memory["embedded_cache_bytes"]}
    assert memory["near_cache_bytes"] <= 2 * MIB // 8
    assert held <= 2 * MIB + 512 * KIB


def test_cache_max_bytes_reads_binary_units() -> None:
    settings = Settings.from_args(["--near-cache-max-bytes", "16MiB"], {"CACHE_MAX_BYTES": "64 MiB"})
    assert (settings.cache_max_bytes, settings.near_max_bytes) == (64 * MIB, 16 * MIB)
    assert Settings.from_args([], {"CACHE_MAX_BYTES": "1048576"}).cache_max_bytes == MIB
