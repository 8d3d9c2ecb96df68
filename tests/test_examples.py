"""The example plug-in loads by name and serves predictions through the cache."""

from __future__ import annotations

import orjson

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
