"""The model seam: loading plug-ins by name, and calling any predictor safely."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import orjson
import pytest

from service.errors import ConfigError, ModelError, ModelTimeout
from service.metrics import Metrics
from service.models.contract import Model, contract_for
from service.models.demo import DemoModel
from service.models.factory import load_model
from service.models.runner import Limits, ModelRunner
from tests.support.keys import pair_input
from tests.support.models import CountingModel, SyncCpuModel

ETH_EUR = pair_input("ETH-EUR")


def runner(model: Model, executor: ThreadPoolExecutor, timeout_s: float = 1.0) -> ModelRunner:
    return ModelRunner(contract_for(model), limits=Limits(timeout_s), executor=executor, metrics=Metrics())


class Plain:
    version = "plain-1"

    def predict(self, pair: str) -> float:
        return 1.5


PLAIN = Plain()


def make_plain() -> Plain:
    return Plain()


NOT_A_MODEL = object()


@pytest.mark.parametrize("attribute", ["PLAIN", "Plain", "make_plain"])
def test_an_object_a_class_or_a_factory_loads(attribute: str) -> None:
    assert isinstance(load_model(f"tests.test_model:{attribute}"), Plain)


@pytest.mark.parametrize(
    "spec", ["tests.no_such_module:Model", "tests.test_model:Missing", "tests.test_model:NOT_A_MODEL"]
)
def test_a_bad_model_is_a_config_error_naming_model(spec: str) -> None:
    with pytest.raises(ConfigError, match=r"^MODEL: "):
        load_model(spec)


@pytest.fixture
def executor() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(2)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
async def test_non_finite_predictions_are_model_errors(
    executor: ThreadPoolExecutor, value: float, caplog: pytest.LogCaptureFixture
) -> None:
    model = CountingModel()
    model.result = value
    with pytest.raises(ModelError, match="its output is invalid") as raised:
        await runner(model, executor).predict(ETH_EUR)
    request_id = raised.value.request_id
    assert request_id is not None
    assert any(
        request_id in r.getMessage() and "not a finite number" in r.getMessage() for r in caplog.records
    )


async def test_a_hanging_model_times_out(executor: ThreadPoolExecutor) -> None:
    model = CountingModel()
    model.hang = True
    with pytest.raises(ModelTimeout):
        await runner(model, executor, timeout_s=0.05).predict(ETH_EUR)


async def test_a_sync_model_runs_off_the_event_loop(executor: ThreadPoolExecutor) -> None:
    model = SyncCpuModel(latency_s=0.3)
    task = asyncio.create_task(runner(model, executor, timeout_s=2).predict(ETH_EUR))
    ticks = 0
    while not task.done():
        await asyncio.sleep(0.01)
        ticks += 1
    assert orjson.loads(await task)["predicted_price"] == model.value("ETH-EUR")
    # A model blocking the loop would finish before the first tick; 3 leaves room for a busy machine.
    assert ticks >= 3, "the loop kept running while the model worked"


async def test_demo_model_predicts_its_pairs_and_prices_move() -> None:
    now = [1_700_000_000.0]
    model = DemoModel(latency_s=0, clock=lambda: now[0])
    assert {"BTC-EUR", "ETH-USD", "DOGE-GBP", "ADA-EUR", "SOL-USD", "XRP-GBP"} <= model.pairs
    first = await model.predict("ETH-EUR")
    now[0] += 600
    later = await model.predict("ETH-EUR")
    assert first != later
    assert 1_000 < first < 10_000
    assert await model.predict("BTC-GBP") != await model.predict("BTC-USD")
