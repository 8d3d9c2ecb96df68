"""The fault-injection helpers do what the fault tests rely on: freeze, kill, restart, delay, blackhole."""

from __future__ import annotations

import asyncio
import gc
import logging
import shutil
import time

import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError, ConnectionError, OutOfMemoryError, TimeoutError

from tests.support.models import CountingModel, ModelSickError, SyncCpuModel, price_of
from tests.support.redis_server import RedisServer, RedisServerError
from tests.support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="no redis-server on PATH")


def client_for(url: str, timeout_s: float = 0.3) -> Redis:
    """A client that fails at once: no retries, so a timeout in a test is the fault, not a backoff."""
    return Redis.from_url(
        url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, retry=Retry(NoBackoff(), 0)
    )


async def round_trip_s(client: Redis) -> float:
    started = time.monotonic()
    assert await client.ping()
    return time.monotonic() - started


# -- RedisServer ----------------------------------------------------------------------------------


async def test_server_answers_on_its_own_port_as_its_own_process(server: RedisServer) -> None:
    assert server.url == f"redis://127.0.0.1:{server.port}/0"
    client = client_for(server.url)
    try:
        info = await client.info("server")
        assert info["process_id"] == server.pid
        assert info["tcp_port"] == server.port
        assert await client.config_get("save") == {"save": ""}
    finally:
        await client.aclose()


async def test_a_frozen_server_times_out_and_answers_again_when_thawed(server: RedisServer) -> None:
    client = client_for(server.url, timeout_s=0.2)
    try:
        server.freeze()
        assert server.frozen
        with pytest.raises(TimeoutError):
            await client.ping()
        server.thaw()
        assert await client.ping()
    finally:
        await client.aclose()


async def test_a_killed_server_refuses_and_restarts_empty_on_the_same_port(server: RedisServer) -> None:
    port, old_pid = server.port, server.pid
    client = client_for(server.url)
    try:
        await client.set("k", "v")
        server.kill()
        assert not server.running
        with pytest.raises(ConnectionError):
            await client.ping()
        server.restart()
        assert (server.port, server.url) == (port, f"redis://127.0.0.1:{port}/0")
        assert server.pid != old_pid
        assert await client.get("k") is None
    finally:
        await client.aclose()


def test_stop_ends_the_process_even_when_frozen(server: RedisServer) -> None:
    server.freeze()
    server.stop()
    assert not server.running
    assert not server.ping(timeout_s=0.1)
    server.restart()
    assert server.ping()


def test_a_busy_fixed_port_fails_to_start_and_leaves_the_other_server_alone(server: RedisServer) -> None:
    """Never mistake someone else's Redis for ours: a server whose port is taken does not start."""
    intruder = RedisServer(port=server.port, start_timeout_s=2.0)
    try:
        with pytest.raises(RedisServerError, match="exited"):
            intruder.start()
        assert not intruder.running
    finally:
        intruder.close()
    assert server.ping()


async def test_extra_args_reach_the_server_noeviction_gives_oom_errors() -> None:
    with RedisServer("--maxmemory", "1mb", "--maxmemory-policy", "noeviction") as server:
        client = client_for(server.url)
        try:
            for i in range(20):
                try:
                    await client.set(f"fill:{i}", b"x" * 200_000)
                except OutOfMemoryError:
                    break
            else:
                pytest.fail("20 x 200 KB fitted into 1 MB")
        finally:
            await client.aclose()


async def test_password_is_required_and_is_in_the_url() -> None:
    with RedisServer(password="s3cret/with:odd@chars") as server:
        assert server.ping()
        authenticated = client_for(server.url)
        anonymous = client_for(f"redis://127.0.0.1:{server.port}/0")
        try:
            assert await authenticated.ping()
            with pytest.raises(AuthenticationError):
                await anonymous.ping()
        finally:
            await authenticated.aclose()
            await anonymous.aclose()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl to make a certificate")
async def test_tls_server_speaks_only_tls() -> None:
    with RedisServer(tls=True) as server:
        assert server.url.startswith(f"rediss://127.0.0.1:{server.port}/0?ssl_ca_certs=")
        secure = client_for(server.url)
        plain = client_for(f"redis://127.0.0.1:{server.port}/0")
        try:
            assert await secure.ping()
            with pytest.raises((ConnectionError, TimeoutError)):
                await plain.ping()
        finally:
            await secure.aclose()
            await plain.aclose()


# -- TcpProxy -------------------------------------------------------------------------------------


async def test_proxy_forwards_and_counts_connections(server: RedisServer, proxy: TcpProxy) -> None:
    assert proxy.url_for(db=3) == f"redis://127.0.0.1:{proxy.port}/3"
    client = client_for(proxy.url_for())
    try:
        await client.set("through", "proxy")
        direct = client_for(server.url)
        assert await direct.get("through") == b"proxy"
        await direct.aclose()
        assert proxy.connections_opened == 1
        assert proxy.open_connections == 1
    finally:
        await client.aclose()


async def test_proxy_adds_latency_each_way(proxy: TcpProxy) -> None:
    client = client_for(proxy.url_for(), timeout_s=1.0)
    try:
        fast = await round_trip_s(client)
        proxy.latency_s = 0.1
        slow = await round_trip_s(client)
        proxy.latency_s, proxy.jitter_s = 0.0, 0.05
        jittery = [await round_trip_s(client) for _ in range(5)]
    finally:
        await client.aclose()
    assert fast < 0.1
    assert 0.2 <= slow < 0.5
    assert max(jittery) <= 0.1 + 0.1
    assert max(jittery) > min(jittery)


async def test_blackhole_holds_data_on_open_connections_until_restored(proxy: TcpProxy) -> None:
    client = client_for(proxy.url_for(), timeout_s=0.2)
    try:
        assert await client.ping()
        proxy.blackhole()
        with pytest.raises(TimeoutError):
            await client.ping()
        assert proxy.open_connections >= 1, "a blackhole keeps connections open"
        proxy.restore()
        assert await client.ping()
    finally:
        await client.aclose()


async def test_reset_all_aborts_open_connections(proxy: TcpProxy) -> None:
    client = client_for(proxy.url_for())
    try:
        assert await client.ping()
        assert proxy.reset_all() == 1
        with pytest.raises(ConnectionError):
            await client.ping()
        assert await client.ping(), "a new connection goes through"
        assert proxy.connections_opened == 2
    finally:
        await client.aclose()


async def test_refuse_then_accept_on_the_same_port(proxy: TcpProxy) -> None:
    port = proxy.port
    proxy.refuse()
    client = client_for(proxy.url_for())
    try:
        with pytest.raises(ConnectionError):
            await client.ping()
        await proxy.accept()
        assert proxy.port == port
        assert await client.ping()
    finally:
        await client.aclose()


async def test_unreachable_target_resets_the_client() -> None:
    with RedisServer() as server:
        port = server.port
    async with TcpProxy("127.0.0.1", port) as proxy:
        client = client_for(proxy.url_for())
        try:
            with pytest.raises(ConnectionError):
                await client.ping()
        finally:
            await client.aclose()


async def test_close_with_busy_connections_leaves_no_task_behind(
    server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    proxy = await TcpProxy("127.0.0.1", server.port, latency_s=0.05).start()
    clients = [client_for(proxy.url_for(), timeout_s=1.0) for _ in range(5)]
    pings = [asyncio.ensure_future(c.ping()) for c in clients]
    await asyncio.sleep(0.02)
    proxy.blackhole()
    await proxy.close()
    await asyncio.gather(*pings, return_exceptions=True)
    for client in clients:
        await client.aclose()
    gc.collect()
    await asyncio.sleep(0)
    assert proxy.open_connections == 0
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR and r.name == "asyncio"]


# -- test models ----------------------------------------------------------------------------------


async def test_counting_model_counts_and_fails_and_hangs() -> None:
    model = CountingModel(version="v1", latency_s=0.01, pairs=frozenset({"ETH-EUR"}))
    assert await model.predict("ETH-EUR") == price_of("ETH-EUR") == model.value("ETH-EUR")
    assert price_of("ETH-EUR") != price_of("BTC-EUR")
    model.fail = True
    with pytest.raises(ModelSickError):
        await model.predict("ETH-EUR")
    model.fail = ValueError("boom")
    with pytest.raises(ValueError, match="boom"):
        await model.predict("ETH-EUR")
    model.fail, model.hang = False, True
    hanging = asyncio.create_task(model.predict("BTC-EUR"))
    await asyncio.sleep(0.05)
    assert model.active == 1
    hanging.cancel()
    with pytest.raises(asyncio.CancelledError):
        await hanging
    assert (model.active, model.cancelled) == (0, 1)
    model.hang, model.result = False, float("nan")
    assert await model.predict("SOL-EUR") != await model.predict("SOL-EUR")  # NaN
    assert model.calls == {"ETH-EUR": 3, "BTC-EUR": 1, "SOL-EUR": 2}
    assert model.total_calls == 6


async def test_sync_model_holds_its_thread_for_its_latency() -> None:
    model = SyncCpuModel(version="v1", latency_s=0.1)
    started = time.monotonic()
    values = await asyncio.gather(*(asyncio.to_thread(model.predict, "ETH-EUR") for _ in range(4)))
    assert time.monotonic() - started >= 0.1
    assert values == [price_of("ETH-EUR")] * 4
    assert model.calls["ETH-EUR"] == model.total_calls == 4
