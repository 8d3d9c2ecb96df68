"""SIGTERM with requests in flight: they finish, new connections are refused, the process exits 0."""

from __future__ import annotations

import asyncio
import signal
import socket
import time

import aiohttp
import pytest

from tests.support.redis_server import RedisServer
from tests.support.service_process import ServiceProcess

pytestmark = [pytest.mark.redis, pytest.mark.slow]

MODEL_LATENCY_S = 1.0
PAIRS = ("BTC-EUR", "ETH-EUR", "SOL-USD", "XRP-GBP", "ADA-EUR", "DOGE-USD")


def refuses_connections(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return False
    except OSError:
        return True


async def test_sigterm_drains_in_flight_requests_and_exits_cleanly(server: RedisServer) -> None:
    service = ServiceProcess(
        "--redis-url", server.url, "--demo-model-latency", str(MODEL_LATENCY_S), "--model-timeout", "5"
    )
    with service:
        async with aiohttp.ClientSession() as session:

            async def ask(pair: str) -> tuple[int, str]:
                async with session.get(f"{service.url}/predict", params={"pair": pair}) as response:
                    return response.status, (await response.json())["pair"]

            in_flight = [asyncio.create_task(ask(pair)) for pair in PAIRS]
            await asyncio.sleep(MODEL_LATENCY_S / 3)  # every request is now waiting for the model
            service.signal(signal.SIGTERM)
            refused_at = None
            deadline = time.monotonic() + MODEL_LATENCY_S
            while time.monotonic() < deadline and refused_at is None:
                if await asyncio.to_thread(refuses_connections, service.port):
                    refused_at = time.monotonic()
                await asyncio.sleep(0.02)
            assert refused_at is not None, "the listener was still open while draining"
            results = await asyncio.gather(*in_flight)
        assert results == [(200, pair) for pair in PAIRS]
        assert await asyncio.to_thread(service.wait, 10.0) == 0
