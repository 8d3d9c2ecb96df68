"""The example plug-in loads by name and serves predictions through the cache."""

from __future__ import annotations

from pathlib import Path

import orjson

from service.models.demo import DemoModel
from service.models.factory import load_model
from tests.conftest import MakeClient


async def test_linear_model_plugs_in_by_name(make_client: MakeClient) -> None:
    model = load_model("examples.linear_model:LinearTrendModel")
    client = await make_client(model=model)
    first = await client.get("/predict?pair=eth-usd")
    second = await client.get("/predict?pair=ETH-USD")
    assert first.status == 200
    assert (first.headers["X-Cache"], second.headers["X-Cache"]) == ("MISS", "HIT")
    body = orjson.loads(await first.read())
    assert body["model_version"] == "linear-trend-1"
    assert body["currency"] == "USD"
    # The history trends upwards, so five minutes ahead is above the last price seen.
    assert body["predicted_price"] > 3_100.0
    assert (await client.get("/predict?pair=SOL-USD")).status == 404


def test_the_demo_pairs_file_holds_every_demo_pair_once() -> None:
    """examples/data/demo_pairs.jsonl, which the load tester's examples send, is the demo model's pairs."""
    lines = (Path(__file__).resolve().parents[1] / "examples/data/demo_pairs.jsonl").read_text().splitlines()
    pairs = [orjson.loads(line)["pair"] for line in lines]
    assert sorted(pairs) == sorted(DemoModel.pairs)
