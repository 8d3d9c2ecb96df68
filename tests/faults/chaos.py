"""`python -m tests.faults.chaos --seconds 600 --seed N`: a seeded random schedule of faults against a live
service, with the invariants checked after every step. Exits 0 when none was broken, else 1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import random
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import aiohttp
import orjson
from aiohttp import web
from redis.asyncio import Redis

from service.app import create_app
from service.caching.backends import RedisBackend
from service.http import appkeys as keys
from service.redis.topology import create_redis_client
from service.settings.config import Settings
from tests.support.keys import pair_entry, pair_key
from tests.support.models import CountingModel
from tests.support.redis_server import RedisServer
from tests.support.tcp_proxy import TcpProxy

PAIRS = [f"{base}-{quote}" for base in ("BTC", "ETH", "SOL", "XRP", "ADA") for quote in ("EUR", "USD", "GBP")]
FAULTS = (
    "none",
    "freeze",
    "restart",
    "slow",
    "jitter",
    "blackhole",
    "reset",
    "refuse",
    "model_fail",
    "model_hang",
    "model_nan",
    "plant",
    "hang_ups",
)
MODEL_FAULTS = {"model_fail": 503, "model_hang": 504, "model_nan": 503}
SETTINGS = replace(
    Settings(),
    ttl_s=1.0,
    stale_s=0.5,
    redis_timeout_s=0.05,
    breaker_cooldown_s=0.3,
    model_timeout_s=0.4,
    lease_ttl_s=0.5,
    near_ttl_s=0.2,
)


@dataclass
class Tally:
    steps: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    hung_up: int = 0
    violations: list[str] = field(default_factory=list)

    def violate(self, step: int, fault: str, what: str) -> None:
        self.violations.append(f"step {step} ({fault}): {what}")


class Chaos:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.model = CountingModel(version=f"chaos-{seed}", latency_s=0.03, pairs=frozenset(PAIRS))
        self.tally = Tally()

    async def run(self, seconds: float) -> Tally:
        with RedisServer() as server:
            proxy = await TcpProxy("127.0.0.1", server.port, seed=self.rng.randrange(2**32)).start()
            redis = create_redis_client(
                proxy.url_for(), timeout_s=SETTINGS.redis_timeout_s, max_connections=64
            )
            app = create_app(replace(SETTINGS, redis_url=proxy.url_for()), redis=redis, model=self.model)
            runner = web.AppRunner(app)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            base_url = f"http://127.0.0.1:{runner.addresses[0][1]}"
            planter = Redis.from_url(server.url)
            try:
                async with aiohttp.ClientSession(base_url, connector=aiohttp.TCPConnector(limit=200)) as http:
                    await self._loop(seconds, app, http, server, proxy, planter)
            finally:
                await planter.aclose()
                await runner.cleanup()
                await redis.aclose()
                await proxy.close()
        return self.tally

    async def _loop(
        self,
        seconds: float,
        app: web.Application,
        http: aiohttp.ClientSession,
        server: RedisServer,
        proxy: TcpProxy,
        planter: Redis,
    ) -> None:
        deadline = time.monotonic() + seconds
        step = 0
        while time.monotonic() < deadline:
            step += 1
            fault = self.rng.choice(FAULTS)
            self.tally.steps[fault] += 1
            pairs = self.rng.sample(PAIRS, k=self.rng.randint(1, 6))
            await self._inject(fault, server, proxy, planter, pairs)
            try:
                await self._wave(step, fault, http, pairs, hang_ups=fault == "hang_ups")
            finally:
                await self._recover(fault, server, proxy)
            await self._check(step, fault, app, http, pairs)

    async def _inject(
        self, fault: str, server: RedisServer, proxy: TcpProxy, planter: Redis, pairs: list[str]
    ) -> None:
        if fault == "freeze":
            server.freeze()
        elif fault == "restart":
            server.kill()
        elif fault == "slow":
            proxy.latency_s = 0.3
        elif fault == "jitter":
            proxy.jitter_s = 0.03
        elif fault == "blackhole":
            proxy.blackhole()
        elif fault == "reset":
            proxy.reset_all()
        elif fault == "refuse":
            proxy.refuse()
            proxy.reset_all()
        elif fault == "model_fail":
            self.model.fail = True
        elif fault == "model_hang":
            self.model.hang = True
        elif fault == "model_nan":
            self.model.result = float("nan")
        elif fault == "plant":
            version = self.model.version

            def junk(pair: str) -> bytes:
                # Under `pair`'s key: garbage, or a well-formed entry of another pair (a mix-up).
                key, other = pair_key(version, pair), self.rng.choice([p for p in PAIRS if p != pair])
                return self.rng.choice(
                    [b"", b"\xff\x00junk", b"x" * 9000, pair_entry(key, other, 1.0).encode()]
                )

            with contextlib.suppress(Exception):
                await planter.mset({pair_key(version, pair): junk(pair) for pair in pairs})

    async def _recover(self, fault: str, server: RedisServer, proxy: TcpProxy) -> None:
        if fault == "freeze":
            server.thaw()
        elif fault == "restart":
            await asyncio.to_thread(server.restart)
        proxy.latency_s = proxy.jitter_s = 0.0
        proxy.restore()
        await proxy.accept()
        self.model.fail = False
        self.model.hang = False
        self.model.result = None

    async def _wave(
        self, step: int, fault: str, http: aiohttp.ClientSession, pairs: list[str], *, hang_ups: bool
    ) -> None:
        allowed = {200, MODEL_FAULTS[fault]} if fault in MODEL_FAULTS else {200}

        async def one(pair: str) -> None:
            hang_up_after_s = self.rng.uniform(0, 0.1) if hang_ups and self.rng.random() < 1 / 3 else None
            try:
                async with asyncio.timeout(hang_up_after_s):
                    async with http.get("/predict", params={"pair": pair}) as response:
                        body = await response.read()
            except TimeoutError:
                self.tally.hung_up += 1
                return
            self.tally.statuses[response.status] += 1
            if response.status not in allowed:
                self.tally.violate(step, fault, f"{pair}: unexpected {response.status} {body[:120]!r}")
            elif response.status == 200:
                answer = orjson.loads(body)
                if (answer["pair"], answer["predicted_price"]) != (pair, self.model.prices(pair)):
                    self.tally.violate(step, fault, f"cross-talk: asked {pair}, got {body[:120]!r}")

        count = self.rng.randint(10, 200)
        await asyncio.gather(*(one(self.rng.choice(pairs)) for _ in range(count)))

    async def _check(
        self, step: int, fault: str, app: web.Application, http: aiohttp.ClientSession, pairs: list[str]
    ) -> None:
        predictions = app[keys.PREDICTIONS]
        cache = app[keys.CACHE]
        assert isinstance(cache, RedisBackend)
        assert isinstance(cache.client, Redis)
        pool = cache.client.connection_pool
        # Leaks: once the dust settles nothing is in flight and the pool holds at most the pub/sub link.
        settle_until = time.monotonic() + SETTINGS.model_timeout_s + 1.0
        while time.monotonic() < settle_until:
            if not predictions.in_flight and len(pool._in_use_connections) <= 1 and not self.model.active:
                break
            await asyncio.sleep(0.01)
        else:
            self.tally.violate(
                step,
                fault,
                f"leak: {len(predictions.in_flight)} in flight, {len(pool._in_use_connections)} connections "
                f"in use, {self.model.active} model calls running",
            )
        # No cached errors: with every fault undone, each pair of the step answers 200 with its price.
        for pair in pairs:
            async with http.get("/predict", params={"pair": pair}) as response:
                body = await response.read()
            if response.status != 200:
                self.tally.violate(step, fault, f"after recovery {pair}: {response.status} {body[:120]!r}")
            elif orjson.loads(body)["predicted_price"] != self.model.prices(pair):
                self.tally.violate(step, fault, f"after recovery {pair}: wrong body {body[:120]!r}")


def summary(tally: Tally, seconds: float, seed: int) -> str:
    lines = [
        f"chaos: seed {seed}, {seconds:g} s, {sum(tally.steps.values())} steps, "
        f"{sum(tally.statuses.values())} answered, {tally.hung_up} hung up",
        "faults:   " + ", ".join(f"{name} {count}" for name, count in sorted(tally.steps.items())),
        "statuses: " + ", ".join(f"{status} {count}" for status, count in sorted(tally.statuses.items())),
        f"violations: {len(tally.violations)}",
    ]
    lines += [f"  {violation}" for violation in tally.violations[:50]]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.faults.chaos", description=__doc__)
    parser.add_argument("--seconds", type=float, default=600.0, help="how long to run (default 600)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the fault schedule (default 1)")
    args = parser.parse_args(argv)
    # Each fault logs warnings by design; the summary is what this command reports.
    logging.basicConfig(level=logging.ERROR)
    tally = asyncio.run(Chaos(args.seed).run(args.seconds))
    print(summary(tally, args.seconds, args.seed))
    return 1 if tally.violations else 0


if __name__ == "__main__":
    sys.exit(main())
