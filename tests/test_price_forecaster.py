"""The worked example: a scikit-learn forecaster fitted at startup, cached like any other model."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import orjson
import pytest
from pydantic import ValidationError
from redis.asyncio import Redis

from examples import make_price_history
from examples.price_forecaster import Forecast, ForecastQuery, PriceForecaster
from service.errors import UnknownInput
from tests.conftest import MakeClient
from tests.test_api import keys_of


class CountingForecaster(PriceForecaster):
    """The forecaster, counting predictions per input; `repeat` makes each do that many rows of work."""

    def __init__(self, fitted: PriceForecaster, version: str) -> None:
        self.__dict__.update(fitted.__dict__)  # share the fitted models: fit once per test module
        self.version = version
        self.calls: Counter[ForecastQuery] = Counter()
        self.repeat = 1
        self._lock = threading.Lock()

    def predict_batch(self, queries: Sequence[ForecastQuery]) -> list[Forecast]:
        with self._lock:
            self.calls.update(queries)
        # `repeat` copies of each query: real feature and model work, answers for the first copies.
        return super().predict_batch([q for q in queries for _ in range(self.repeat)])[:: self.repeat]


@pytest.fixture(scope="module")
def fitted() -> PriceForecaster:
    return PriceForecaster()


@pytest.fixture
def forecaster(fitted: PriceForecaster, model_version: str) -> CountingForecaster:
    return CountingForecaster(fitted, model_version)


def test_the_shipped_history_is_what_the_generator_makes(tmp_path: Path) -> None:
    """The training data is reproducible: regenerating it gives the committed bytes."""
    make_price_history.main([str(tmp_path / "history.csv")])
    assert (tmp_path / "history.csv").read_bytes() == make_price_history.PATH.read_bytes()


def test_it_fits_at_startup_in_seconds() -> None:
    started = time.perf_counter()
    PriceForecaster()
    # The target is under 5 s; the bound leaves room for a loaded two-core machine.
    assert time.perf_counter() - started < 15


def test_forecasts_are_finite_ordered_and_widen_with_the_horizon(fitted: PriceForecaster) -> None:
    widths = []
    for horizon in (1, 60):
        forecast = fitted.predict(ForecastQuery(pair="BTC-USD", horizon_minutes=horizon))
        assert 0 < forecast.low <= forecast.predicted_price <= forecast.high
        widths.append(forecast.high - forecast.low)
    assert widths[1] > widths[0]
    batch = fitted.predict_batch([ForecastQuery(pair=p) for p in sorted(fitted.pairs)])
    assert [f.pair for f in batch] == sorted(fitted.pairs)
    assert (
        batch[0].predicted_price
        == fitted.predict(ForecastQuery(pair=sorted(fitted.pairs)[0])).predicted_price
    )


@pytest.mark.parametrize(
    "fields",
    [{"pair": "BTC-USD", "horizon_minutes": 0}, {"pair": "BTC-USD", "horizon_minutes": 61}, {"pair": "x"}],
)
def test_the_input_type_refuses_what_it_cannot_forecast(fields: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        ForecastQuery.model_validate(fields)


def test_an_unknown_pair_is_refused_before_any_work(fitted: PriceForecaster) -> None:
    with pytest.raises(UnknownInput):
        fitted.check(ForecastQuery(pair="DOGE-JPY"))


# -- behind the service ------------------------------------------------------------------------------


@pytest.mark.redis
async def test_spellings_share_a_model_call_through_the_service(
    make_client: MakeClient, redis: Redis, forecaster: CountingForecaster, model_version: str
) -> None:
    client = await make_client(model=forecaster, redis=redis)
    get_15 = await client.get("/predict", params={"pair": "BTC-USD", "horizon_minutes": "15"})
    post_15 = await client.post("/predict", json={"horizon_minutes": 15.0, "pair": "btc-usd"})
    bare = await client.post("/predict", json={"pair": "BTC-USD"})
    default = await client.post("/predict", json={"pair": "BTC-USD", "horizon_minutes": 5})
    assert [r.status for r in (get_15, post_15, bare, default)] == [200] * 4
    assert (get_15.headers["X-Cache"], post_15.headers["X-Cache"]) == ("MISS", "HIT")
    assert (bare.headers["X-Cache"], default.headers["X-Cache"]) == ("MISS", "HIT")
    assert await get_15.read() == await post_15.read()
    body = orjson.loads(await get_15.read())
    assert set(body) == {
        "pair",
        "horizon_minutes",
        "predicted_price",
        "low",
        "high",
        "model_version",
        "predicted_at",
    }
    assert body["low"] <= body["predicted_price"] <= body["high"]
    assert sorted(forecaster.calls.values()) == [1, 1]
    unknown = await client.get("/predict", params={"pair": "DOGE-JPY"})
    assert (unknown.status, orjson.loads(await unknown.read())["error"]["code"]) == (404, "unknown_input")
    assert sum(forecaster.calls.values()) == 2  # refused by `check`: no model call
    assert len(await keys_of(redis, model_version)) == 2


@pytest.mark.redis
@pytest.mark.parametrize(
    "request_args",
    [
        {"params": {"pair": "BTC-USD", "horizon_minutes": "0"}},
        {"params": {"pair": "BTC-USD", "horizon_minutes": "61"}},
        {"params": {"pair": "BTC-USD", "horizon_minutes": "x"}},
        {"json": {"pair": "BTC-USD", "horizon_minutes": 15, "confidence": 0.9}},
        {"json": [{"pair": "BTC-USD"}]},
        {"data": b"pair=BTC-USD", "headers": {"Content-Type": "application/json"}},
    ],
)
async def test_bad_forecast_requests_are_400_and_change_nothing(
    make_client: MakeClient,
    redis: Redis,
    forecaster: CountingForecaster,
    model_version: str,
    request_args: dict[str, object],
) -> None:
    client = await make_client(model=forecaster, redis=redis)
    method = "GET" if "params" in request_args else "POST"
    response = await client.request(method, "/predict", **request_args)  # type: ignore[arg-type]
    assert response.status == 400
    error = orjson.loads(await response.read())["error"]
    assert error["code"] == "invalid_input"
    assert isinstance(error["fields"], list)
    assert not forecaster.calls
    assert await keys_of(redis, model_version) == []


@pytest.mark.redis
async def test_hits_keep_flowing_while_the_forecaster_computes(
    make_client: MakeClient, redis: Redis, forecaster: CountingForecaster
) -> None:
    """The forecaster's CPU work runs in the thread pool: hits are answered while a miss computes."""
    client = await make_client(model=forecaster, redis=redis, ttl_s=60)
    assert (await client.get("/predict", params={"pair": "ETH-EUR"})).status == 200
    forecaster.repeat = 5_000  # one call now does 5 000 rows of real feature and model work
    started = time.perf_counter()
    miss = asyncio.create_task(client.get("/predict", params={"pair": "ETH-USD"}))
    hits = 0
    while not miss.done():
        hit = await client.get("/predict", params={"pair": "ETH-EUR"})
        assert hit.headers["X-Cache"] == "HIT"
        hits += 1
    miss_s = time.perf_counter() - started
    assert (await miss).status == 200
    # A model holding the loop would let through no hit at all; a loaded machine still serves dozens.
    assert miss_s > 0.1, "the model call should take a while for this test to mean something"
    assert hits >= 10, f"{hits} hits in {miss_s:.2f} s"


@pytest.mark.redis
async def test_concurrent_distinct_forecasts_are_computed_in_batches(
    make_client: MakeClient, redis: Redis, forecaster: CountingForecaster
) -> None:
    """300 concurrent POST /predict for 300 distinct inputs: all 200, in about 300/32 model calls."""
    # Each prediction does 20 rows of work, so that, as with a real model, requests arrive faster
    # than the model computes them (the test client shares the service's loop and two cores).
    forecaster.repeat = 20
    client = await make_client(model=forecaster, redis=redis)
    pairs = sorted(forecaster.pairs)
    inputs = [{"pair": pair, "horizon_minutes": h} for pair in pairs for h in range(1, 51)][:300]
    responses = await asyncio.gather(*(client.post("/predict", json=item) for item in inputs))
    assert {r.status for r in responses} == {200}
    bodies = [orjson.loads(await r.read()) for r in responses]
    assert [(b["pair"], b["horizon_minutes"]) for b in bodies] == [
        (i["pair"], i["horizon_minutes"]) for i in inputs
    ]
    metrics = await (await client.get("/metrics")).text()
    calls = next(
        float(line.split()[1])
        for line in metrics.splitlines()
        if line.startswith("predcache_model_calls_total")
    )
    assert calls <= 300 / 32 + 3
