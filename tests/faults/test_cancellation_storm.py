"""Thousands of requests over many pairs, a third hanging up at random, Redis behind a jittery link."""

from __future__ import annotations

import asyncio
import random

import aiohttp
import orjson
import pytest

from tests.faults.conftest import StartService, assert_no_leaks, eventually
from tests.support.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.redis, pytest.mark.slow]

REQUESTS = 2000
PAIRS = [f"P{i:03d}-EUR" for i in range(60)]


async def test_cancellation_storm_never_crosses_answers_and_leaks_nothing(
    start_service: StartService,
    proxy: TcpProxy,
    loop_errors: list[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    rng = random.Random(5)
    proxy.jitter_s = 0.02  # up to 20 ms each way on every chunk: some commands outlive their budget
    service = await start_service(proxy.url_for(), ttl_s=0.5, model_timeout_s=1.0)
    service.model.latency_s = 0.03
    await service.get(PAIRS[0])
    baseline_in_use = service.connections_in_use()  # the pub/sub subscription holds one for good

    completed: list[tuple[str, int, bytes]] = []
    hung_up = 0
    connector = aiohttp.TCPConnector(limit=300)
    async with aiohttp.ClientSession(str(service.client.make_url("")), connector=connector) as session:

        async def one(pair: str, hang_up_after_s: float | None) -> None:
            nonlocal hung_up
            try:
                async with asyncio.timeout(hang_up_after_s):
                    async with session.get("/predict", params={"pair": pair}) as response:
                        completed.append((pair, response.status, await response.read()))
            except TimeoutError:
                hung_up += 1

        await asyncio.gather(
            *(
                one(rng.choice(PAIRS), rng.uniform(0.0, 0.15) if rng.random() < 1 / 3 else None)
                for _ in range(REQUESTS)
            )
        )

    assert hung_up > REQUESTS // 10
    assert len(completed) + hung_up == REQUESTS
    for pair, status, body in completed:
        assert status == 200, (pair, status, body)
        answer = orjson.loads(body)
        # The pair asked for, with that pair's price: never another request's answer.
        assert (answer["pair"], answer["predicted_price"]) == (pair, service.model.value(pair))

    await eventually(
        lambda: not service.predictions.in_flight and service.connections_in_use() <= baseline_in_use,
        timeout_s=3.0,
    )
    assert len(service.predictions.in_flight) == 0
    assert service.connections_in_use() <= baseline_in_use
    assert service.model.active == 0
    assert_no_leaks(loop_errors, caplog.text)
