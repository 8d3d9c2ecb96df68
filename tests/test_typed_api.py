"""Any model: GET and POST share entries, every spelling of an input is one key, bad input is a 400
that reaches neither the model nor the cache, and the model's types are the published schema."""

from __future__ import annotations

import asyncio
import itertools

import orjson
import pytest
from redis.asyncio import Redis

from tests.conftest import MakeClient
from tests.support.models import CountingModel, TypedModel
from tests.test_api import keys_of

pytestmark = pytest.mark.redis


async def test_get_and_post_share_one_entry_and_one_model_call(
    make_client: MakeClient, redis: Redis, model_version: str
) -> None:
    """200 concurrent requests, GET and POST, three spellings of one pair: one model call, one body."""
    model = CountingModel(version=model_version, latency_s=0.2)
    client = await make_client(model=model, redis=redis)
    spellings = itertools.cycle(["ETH-EUR", "eth-eur", "ETH/EUR", "eth/eur"])

    async def ask(i: int) -> tuple[int, bytes]:
        pair = next(spellings)
        if i % 2:
            response = await client.get("/predict", params={"pair": pair})
        else:
            response = await client.post("/predict", json={"pair": pair})
        return response.status, await response.read()

    replies = await asyncio.gather(*(ask(i) for i in range(200)))
    assert {status for status, _ in replies} == {200}
    assert len({body for _, body in replies}) == 1
    assert orjson.loads(replies[0][1])["pair"] == "ETH-EUR"
    assert model.total_calls == 1
    assert len(await keys_of(redis, model_version)) == 1
    hit = await client.post(
        "/predict", data=b' { "pair" : "Eth/Eur" } ', headers={"Content-Type": "application/json"}
    )
    assert (hit.status, hit.headers["X-Cache"], await hit.read()) == (200, "HIT", replies[0][1])


async def test_spellings_of_a_typed_input_share_a_call_and_distinct_inputs_do_not(
    make_client: MakeClient, redis: Redis, model_version: str
) -> None:
    model = TypedModel(version=model_version)
    client = await make_client(model=model, redis=redis)
    same_15 = [
        client.get("/predict", params={"pair": "BTC-USD", "horizon_minutes": "15"}),
        client.post("/predict", json={"horizon_minutes": 15.0, "pair": "btc-usd"}),
        client.post("/predict", json={"pair": "BTC/USD", "horizon_minutes": 15}),
    ]
    default_5 = [
        client.post("/predict", json={"pair": "BTC-USD"}),
        client.post("/predict", json={"pair": "BTC-USD", "horizon_minutes": 5}),
        client.get("/predict", params={"pair": "btc/usd"}),
    ]
    bodies = []
    for request in [*same_15, *default_5]:
        response = await request
        assert response.status == 200, await response.text()
        bodies.append(orjson.loads(await response.read()))
    assert model.calls == {("BTC-USD", 15): 1, ("BTC-USD", 5): 1}
    assert [body["horizon_minutes"] for body in bodies] == [15, 15, 15, 5, 5, 5]
    assert len(await keys_of(redis, model_version)) == 2


BAD_INPUTS = [
    ("get", {"pair": "BTC-USD", "horizon_minutes": "0"}, "horizon_minutes"),
    ("get", {"pair": "BTC-USD", "horizon_minutes": "61"}, "horizon_minutes"),
    ("get", {"pair": "BTC-USD", "horizon_minutes": "x"}, "horizon_minutes"),
    ("get", {"pair": "BTC-USD", "colour": "red"}, "colour"),
    ("get", {"pair": "BTC_USD"}, "pair"),
    ("get", {}, "pair"),
    ("post", {"pair": "BTC-USD", "horizon_minutes": 0}, "horizon_minutes"),
    ("post", {"pair": "BTC-USD", "horizon_minutes": 61}, "horizon_minutes"),
    ("post", {"pair": "BTC-USD", "horizon_minutes": "x"}, "horizon_minutes"),
    ("post", {"pair": "BTC-USD", "horizon_minutes": 15.5}, "horizon_minutes"),
    ("post", {"pair": "BTC-USD", "colour": "red"}, "colour"),
    ("post", {"pair": ["BTC-USD"]}, "pair"),
    ("post", [{"pair": "BTC-USD"}], None),
    ("post", "BTC-USD", None),
    ("raw", b"pair=BTC-USD", None),
    ("raw", b'{"pair": "BTC-USD"', None),
    ("raw", b"\xff\xfe", None),
]


@pytest.mark.parametrize(("method", "payload", "field"), BAD_INPUTS)
async def test_an_invalid_input_is_a_400_naming_the_field_and_changes_nothing(
    make_client: MakeClient,
    redis: Redis,
    model_version: str,
    method: str,
    payload: object,
    field: str | None,
) -> None:
    model = TypedModel(version=model_version)
    client = await make_client(model=model, redis=redis)
    if method == "get":
        assert isinstance(payload, dict)
        response = await client.get("/predict", params=payload)
    elif method == "post":
        response = await client.post("/predict", json=payload)
    else:
        assert isinstance(payload, bytes)
        response = await client.post("/predict", data=payload, headers={"Content-Type": "application/json"})
    assert response.status == 400
    error = orjson.loads(await response.read())["error"]
    assert error["code"] == "invalid_input"
    assert error["message"]
    assert [f["field"] for f in error["fields"]] == ([field] if field else [])
    assert model.total_calls == 0
    assert await keys_of(redis, model_version) == []


async def test_a_body_over_the_cap_is_413_and_a_non_json_one_415(
    make_client: MakeClient, redis: Redis, model_version: str
) -> None:
    model = TypedModel(version=model_version)
    client = await make_client(model=model, redis=redis, max_body_bytes=1024)
    big = await client.post("/predict", json={"pair": "BTC-USD", "pad": "x" * 2000})
    assert big.status == 413
    assert orjson.loads(await big.read())["error"]["code"] == "request_entity_too_large"
    form = await client.post("/predict", data={"pair": "BTC-USD"})
    assert form.status == 415
    assert orjson.loads(await form.read())["error"]["code"] == "unsupported_media_type"
    assert model.total_calls == 0


async def test_a_refused_input_is_404_and_never_cached(
    make_client: MakeClient, redis: Redis, model_version: str
) -> None:
    model = TypedModel(version=model_version)
    client = await make_client(model=model, redis=redis)
    for _ in range(2):
        response = await client.get("/predict", params={"pair": "NOPE-USD"})
        assert response.status == 404
        assert orjson.loads(await response.read())["error"]["code"] == "unknown_input"
    assert model.calls[("NOPE-USD", 5)] == 2  # refused by the model each time: nothing was cached
    assert await keys_of(redis, model_version) == []


async def test_an_output_the_output_type_refuses_is_503_and_never_cached(
    make_client: MakeClient, redis: Redis, model_version: str
) -> None:
    model = TypedModel(version=model_version)
    model.output = {"pair": "BTC-USD", "price": "not a number"}
    client = await make_client(model=model, redis=redis)
    response = await client.get("/predict", params={"pair": "BTC-USD"})
    assert response.status == 503
    assert orjson.loads(await response.read())["error"]["code"] == "model_error"
    model.output = None
    healthy = await client.get("/predict", params={"pair": "BTC-USD"})
    assert (healthy.status, healthy.headers["X-Cache"]) == (200, "MISS")
    assert orjson.loads(await healthy.read())["band"][0] < orjson.loads(await healthy.read())["price"]


async def test_the_published_schema_is_the_models_own(make_client: MakeClient, model_version: str) -> None:
    client = await make_client(model=TypedModel(version=model_version))
    spec = orjson.loads(await (await client.get("/openapi.json")).read())
    get = spec["paths"]["/predict"]["get"]
    horizon = next(p for p in get["parameters"] if p["name"] == "horizon_minutes")
    assert (horizon["required"], horizon["schema"]["minimum"], horizon["schema"]["maximum"]) == (False, 1, 60)
    assert next(p for p in get["parameters"] if p["name"] == "pair")["required"] is True
    schemas = spec["components"]["schemas"]
    assert schemas["Input"]["required"] == ["pair"]
    assert set(schemas["Output"]["properties"]) == {"pair", "horizon_minutes", "price", "band"}
    body = spec["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/Input"}
    assert spec["info"]["version"] == model_version
