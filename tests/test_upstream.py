"""Upstream mode against a real model server, MLServer: every spelling of a request is one upstream
call, its 4xx pass through, its failures are 503 and its hangs 504, none of them cached."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from service.__main__ import main
from service.app import create_app
from service.settings.config import Settings
from tests.support.mlserver import IRIS_VERSION, MLServer
from tests.support.mlserver_lab import VERSION_HEADER
from tests.test_api import keys_of

pytestmark = pytest.mark.redis

Client = TestClient[web.Request, web.Application]
MakeUpstream = Callable[..., Awaitable[Client]]

SETOSA = [5.1, 3.5, 1.4, 0.2]


def v2_request(features: list[float], *, name: str = "x") -> dict[str, Any]:
    return {"inputs": [{"name": name, "shape": [1, 4], "datatype": "FP64", "data": features}]}


@pytest.fixture
def make_upstream(aiohttp_client: Any, redis: Redis, model_version: str) -> MakeUpstream:
    """predcache in front of `url`, built from settings as `python -m service` builds it."""

    async def make(url: str, **settings: Any) -> Client:
        settings.setdefault("model_version", model_version)
        settings.setdefault("redis_timeout_s", 1.0)
        app = create_app(replace(Settings(), model=url, **settings), redis=redis)
        client: Client = await aiohttp_client(app)
        return client

    return make


async def post(client: Client, body: bytes | dict[str, Any]) -> tuple[int, bytes, dict[str, str]]:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    response = await client.post("/predict", data=data, headers={"Content-Type": "application/json"})
    return response.status, await response.read(), dict(response.headers)


async def test_identical_v2_requests_make_one_inference_and_are_served_byte_identical(
    mlserver: MLServer, make_upstream: MakeUpstream, redis: Redis, model_version: str
) -> None:
    """200 concurrent V2 infer requests for one input, spelled with other key orders, whitespace and
    15 as 15.0: MLServer counts one inference, and all 200 get the same body, as does a later hit."""
    client = await make_upstream(f"{mlserver.url}/v2/models/iris/infer")
    before = mlserver.inferences("iris")
    spellings = [
        orjson.dumps(v2_request(SETOSA)),
        b'{ "inputs" : [ { "data" : [5.1, 3.5, 1.4, 0.2], "datatype" : "FP64", "shape" : [1, 4],\n'
        b'"name" : "x" } ] }',
        b'{"inputs":[{"shape":[1.0,4.0],"name":"x","datatype":"FP64","data":[5.1,3.5,1.4,0.2]}]}',
        b'{"inputs":[{"shape":[1e0,4],"datatype":"FP64","data":[5.10,3.50,1.40,0.20],"name":"x"}]}',
    ]
    replies = await asyncio.gather(*(post(client, spellings[i % len(spellings)]) for i in range(200)))
    assert {status for status, _, _ in replies} == {200}
    bodies = {body for _, body, _ in replies}
    assert len(bodies) == 1
    assert mlserver.inferences("iris") - before == 1
    answer = orjson.loads(bodies.pop())
    assert (answer["model_name"], answer["model_version"]) == ("iris", IRIS_VERSION)
    assert answer["outputs"][0]["data"] == [0]  # setosa
    assert len(await keys_of(redis, model_version)) == 1
    status, hit, headers = await post(client, spellings[1])
    assert (status, headers["X-Cache"], hit) == (200, "HIT", replies[0][1])
    assert "Age" in headers
    assert headers["Cache-Status"].startswith("predcache; hit")
    assert mlserver.inferences("iris") - before == 1
    # Another input is another inference.
    status, other, _ = await post(client, v2_request([6.7, 3.0, 5.2, 2.3]))
    assert (status, orjson.loads(other)["outputs"][0]["data"]) == (200, [2])
    assert mlserver.inferences("iris") - before == 2


async def test_get_and_post_share_one_upstream_call(lab: MLServer, make_upstream: MakeUpstream) -> None:
    """Without a schema, query values are strings: `?name=a&n=15` is `{"name": "a", "n": "15"}`."""
    client = await make_upstream(f"{lab.url}/lab/predict")
    replies = await asyncio.gather(
        client.get("/predict", params={"name": "a", "n": "15"}),
        client.post("/predict", json={"n": "15", "name": "a"}),
        client.get("/predict", params={"n": "15", "name": "a"}),
    )
    bodies = {await reply.read() for reply in replies}
    assert {reply.status for reply in replies} == {200}
    assert len(bodies) == 1
    assert orjson.loads(bodies.pop())["echo"] == {"name": "a", "n": "15"}
    assert lab.lab_calls() == {'{"n":"15","name":"a"}': 1}


async def test_with_a_schema_a_query_number_is_the_json_number(
    lab: MLServer, make_upstream: MakeUpstream, tmp_path: Path
) -> None:
    """A field the schema types as a number reads `?n=15` as 15: GET and `{"n": 15.0}` share a call."""
    schema = tmp_path / "schema.json"
    schema.write_bytes(orjson.dumps(LAB_SCHEMA))
    client = await make_upstream(f"{lab.url}/lab/predict", input_schema=str(schema))
    get = await client.get("/predict", params={"name": "a", "n": "15", "flag": "true"})
    assert get.status == 200, await get.text()
    status, body, headers = await post(client, {"n": 15.0, "flag": True, "name": "a"})
    assert (status, headers["X-Cache"], body) == (200, "HIT", await get.read())
    assert lab.lab_calls() == {'{"flag":true,"n":15,"name":"a"}': 1}


LAB_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["name", "n"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "n": {"$ref": "#/$defs/Count"},
        "flag": {"type": "boolean"},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    "$defs": {"Count": {"type": "number", "minimum": 0, "maximum": 100}},
}


@pytest.mark.parametrize(
    ("request_", "fields"),
    [
        ({"name": "a", "n": 101}, ["n"]),
        ({"name": "a", "n": "15"}, ["n"]),
        ({"name": "", "n": 1}, ["name"]),
        ({"n": 1}, ["(input)"]),
        ({"name": "a", "n": 1, "colour": "red"}, ["(input)"]),
        ({"name": "a", "n": 1, "tags": ["x", 2]}, ["tags.1"]),
        ({"name": "a", "n": -1, "flag": "yes"}, ["flag", "n"]),
    ],
)
async def test_an_input_schema_refuses_bad_input_before_the_upstream(
    lab: MLServer,
    make_upstream: MakeUpstream,
    tmp_path: Path,
    redis: Redis,
    model_version: str,
    request_: dict[str, Any],
    fields: list[str],
) -> None:
    schema = tmp_path / "schema.json"
    schema.write_bytes(orjson.dumps(LAB_SCHEMA))
    client = await make_upstream(f"{lab.url}/lab/predict", input_schema=str(schema))
    status, body, _ = await post(client, request_)
    error = orjson.loads(body)["error"]
    assert (status, error["code"]) == (400, "invalid_input")
    assert [field["field"] for field in error["fields"]] == fields
    assert lab.lab_calls() == {}
    assert await keys_of(redis, model_version) == []


async def test_the_input_schema_is_the_published_one(
    lab: MLServer, make_upstream: MakeUpstream, tmp_path: Path, model_version: str
) -> None:
    schema = tmp_path / "schema.json"
    schema.write_bytes(orjson.dumps(LAB_SCHEMA))
    client = await make_upstream(f"{lab.url}/lab/predict", input_schema=str(schema))
    spec = orjson.loads(await (await client.get("/openapi.json")).read())
    schemas = spec["components"]["schemas"]
    assert schemas["Input"]["required"] == ["name", "n"]
    assert schemas["Input"]["properties"]["n"] == {"$ref": "#/components/schemas/Count"}
    assert schemas["Count"] == {"type": "number", "minimum": 0, "maximum": 100}
    assert "$schema" not in schemas["Input"]
    parameters = {p["name"]: p for p in spec["paths"]["/predict"]["get"]["parameters"]}
    assert set(parameters) == {"name", "n", "flag", "Cache-Control"}  # scalars only: tags needs a POST
    assert parameters["name"]["required"] is True
    assert spec["info"]["version"] == model_version


async def test_an_upstream_4xx_is_passed_through_and_never_cached(
    mlserver: MLServer, make_upstream: MakeUpstream, redis: Redis, model_version: str
) -> None:
    """MLServer's own 422 for a V2 request without `inputs`: its status and body, every time."""
    client = await make_upstream(f"{mlserver.url}/v2/models/iris/infer")
    replies = await asyncio.gather(*(post(client, {"inputz": SETOSA}) for _ in range(20)))
    assert {status for status, _, _ in replies} == {422}
    assert len({body for _, body, _ in replies}) == 1
    detail = orjson.loads(replies[0][1])["detail"]
    assert detail[0]["loc"] == ["body", "inputs"]
    assert {headers["Content-Type"] for _, _, headers in replies} == {"application/json"}
    assert not any("X-Cache" in headers for _, _, headers in replies)
    assert await keys_of(redis, model_version) == []
    # The client's bad input, not a failing model: the model-error alert must not fire on it.
    metrics = await (await client.get("/metrics")).text()
    assert "predcache_model_errors_total 0.0" in metrics
    assert "predcache_model_calls_total 0.0" not in metrics


async def test_every_request_for_a_refused_input_asks_the_upstream_again(
    lab: MLServer, make_upstream: MakeUpstream, redis: Redis, model_version: str
) -> None:
    """Concurrent waiters share one refusal; the next request asks again, since none is cached."""
    client = await make_upstream(f"{lab.url}/lab/predict")
    lab.lab(status=400, sleep_s=0.2)
    first = await asyncio.gather(*(post(client, {"q": 1}) for _ in range(10)))
    assert {(status, orjson.loads(body)["error"]) for status, body, _ in first} == {(400, "lab says 400")}
    second = await post(client, {"q": 1})
    assert second[0] == 400
    assert lab.lab_calls() == {'{"q":1}': 2}
    assert await keys_of(redis, model_version) == []


@pytest.mark.parametrize("status", [401, 429])
async def test_a_4xx_about_predcaches_own_request_is_a_model_error(
    lab: MLServer, make_upstream: MakeUpstream, status: int
) -> None:
    """Credentials and capacity between predcache and the upstream are not the client's to fix."""
    client = await make_upstream(f"{lab.url}/lab/predict")
    lab.lab(status=status)
    answer, body, _ = await post(client, {"q": 1})
    assert (answer, orjson.loads(body)["error"]["code"]) == (503, "model_error")


async def test_an_upstream_5xx_is_a_503_for_every_waiter_and_never_cached(
    mlserver: MLServer, make_upstream: MakeUpstream, redis: Redis, model_version: str
) -> None:
    """MLServer answers 500 to a V2 tensor of the wrong shape for the model."""
    client = await make_upstream(f"{mlserver.url}/v2/models/iris/infer")
    before = mlserver.inferences("iris")
    bad = v2_request(SETOSA[:3])
    bad["inputs"][0]["shape"] = [1, 3]
    replies = await asyncio.gather(*(post(client, bad) for _ in range(20)))
    assert {status for status, _, _ in replies} == {503}
    error = orjson.loads(replies[0][1])["error"]
    assert error["code"] == "model_error"
    assert "answered 500" in error["message"]
    assert mlserver.inferences("iris") - before == 1
    assert (await post(client, bad))[0] == 503
    assert mlserver.inferences("iris") - before == 2  # not cached: asked again
    assert await keys_of(redis, model_version) == []


async def test_a_lab_5xx_is_not_cached_and_the_next_request_recovers(
    lab: MLServer, make_upstream: MakeUpstream
) -> None:
    client = await make_upstream(f"{lab.url}/lab/predict")
    lab.lab(status=500)
    assert (await post(client, {"q": 1}))[0] == 503
    lab.lab()
    status, body, headers = await post(client, {"q": 1})
    assert (status, headers["X-Cache"], orjson.loads(body)["echo"]) == (200, "MISS", {"q": 1})


async def test_a_2xx_that_is_not_json_is_a_503_and_never_cached(
    lab: MLServer, make_upstream: MakeUpstream, redis: Redis, model_version: str
) -> None:
    client = await make_upstream(f"{lab.url}/lab/predict")
    lab.lab(not_json=True)
    for _ in range(2):
        status, body, _ = await post(client, {"q": 1})
        error = orjson.loads(body)["error"]
        assert (status, error["code"]) == (503, "model_error")
        assert "not JSON" in error["message"]
    assert lab.lab_calls() == {'{"q":1}': 2}
    assert await keys_of(redis, model_version) == []


async def test_a_slow_upstream_is_a_504_at_the_model_timeout_for_every_waiter(
    lab: MLServer, make_upstream: MakeUpstream, redis: Redis, model_version: str
) -> None:
    client = await make_upstream(f"{lab.url}/lab/predict", model_timeout_s=0.5)
    lab.lab(sleep_s=3)
    started = time.monotonic()
    replies = await asyncio.gather(*(post(client, {"q": 1}) for _ in range(20)))
    elapsed_s = time.monotonic() - started
    assert {(status, orjson.loads(body)["error"]["code"]) for status, body, _ in replies} == {
        (504, "model_timeout")
    }
    assert 0.5 <= elapsed_s < 2.0
    assert lab.lab_calls() == {'{"q":1}': 1}
    assert await keys_of(redis, model_version) == []


async def test_an_answer_from_another_model_version_is_served_but_not_cached(
    lab: MLServer, make_upstream: MakeUpstream, redis: Redis, model_version: str
) -> None:
    client = await make_upstream(f"{lab.url}/lab/predict", upstream_version_header=VERSION_HEADER)
    lab.lab(version="some-other-version")
    for _ in range(2):
        status, body, headers = await post(client, {"q": 1})
        assert (status, headers["X-Cache"], orjson.loads(body)["echo"]) == (200, "MISS", {"q": 1})
        assert "stored" not in headers["Cache-Status"]
    assert lab.lab_calls() == {'{"q":1}': 2}
    assert await keys_of(redis, model_version) == []
    # The upstream now answers with the configured version: cached as usual.
    lab.lab(version=model_version)
    status, _, headers = await post(client, {"q": 1})
    assert (status, headers["Cache-Status"]) == (200, "predcache; fwd=uri-miss; stored")
    status, _, headers = await post(client, {"q": 1})
    assert (status, headers["X-Cache"]) == (200, "HIT")
    assert len(await keys_of(redis, model_version)) == 1


@pytest.mark.slow
async def test_a_killed_upstream_gives_503s_and_predcache_recovers_when_it_is_back(
    make_upstream: MakeUpstream, redis: Redis, model_version: str
) -> None:
    with MLServer() as server:
        client = await make_upstream(f"{server.url}/v2/models/iris/infer")
        assert (await post(client, v2_request(SETOSA)))[0] == 200
        server.kill()
        # A cached input is still served; a new one cannot be computed.
        status, _, headers = await post(client, v2_request(SETOSA))
        assert (status, headers["X-Cache"]) == (200, "HIT")
        replies = await asyncio.gather(*(post(client, v2_request([6.7, 3.0, 5.2, 2.3])) for _ in range(10)))
        assert {status for status, _, _ in replies} == {503}
        error = orjson.loads(replies[0][1])["error"]
        assert error["code"] == "model_error"
        assert "could not be reached" in error["message"]
        assert str(server.port) not in error["message"]  # the upstream's address stays in the log
        assert len(await keys_of(redis, model_version)) == 1
        server.start()
        status, body, headers = await post(client, v2_request([6.7, 3.0, 5.2, 2.3]))
        assert (status, headers["X-Cache"]) == (200, "MISS")
        assert orjson.loads(body)["outputs"][0]["data"] == [2]
        assert server.inferences("iris") == 1  # counted since the restart


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model", "http://127.0.0.1:9/infer"], "MODEL_VERSION: required with an upstream MODEL"),
        (["--model", "http:///infer", "--model-version", "1"], "--model: expected http://HOST[:PORT]/PATH"),
        (["--model-version", "1"], "MODEL_VERSION: only for an upstream model"),
        (["--input-schema", "s.json"], "INPUT_SCHEMA: only for an upstream model"),
        (
            ["--model", "http://127.0.0.1:9/infer", "--model-version", "1", "--input-schema", "/nonexistent"],
            "INPUT_SCHEMA: cannot read '/nonexistent'",
        ),
    ],
)
def test_upstream_settings_are_checked_before_serving(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv, environ={}) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        (b"{not json", "is not JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"type": "objekt"}', "not a valid JSON Schema"),
    ],
)
def test_an_input_schema_that_is_not_one_stops_the_service(
    schema: bytes, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "schema.json"
    path.write_bytes(schema)
    argv = ["--model", "http://127.0.0.1:9/infer", "--model-version", "1", "--input-schema", str(path)]
    assert main(argv, environ={}) == 2
    assert message in capsys.readouterr().err


async def test_a_password_in_the_upstream_url_stays_out_of_the_log(
    lab: MLServer, make_upstream: MakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO")
    url = f"{lab.url}/lab/predict".replace("http://", "http://predcache:s3cret@")
    client = await make_upstream(url)
    lab.lab(status=500)
    assert (await post(client, {"q": 1}))[0] == 503
    lab.lab()
    assert (await post(client, {"q": 1}))[0] == 200
    assert "predcache:***@" in caplog.text
    assert "s3cret" not in caplog.text


async def test_a_batch_in_upstream_mode_is_concurrent_single_calls_sharing_keys(
    mlserver: MLServer, make_upstream: MakeUpstream
) -> None:
    """The upstream has no batch contract: a batch's distinct inputs are one V2 inference each, and
    two spellings of one input share theirs."""
    client = await make_upstream(f"{mlserver.url}/v2/models/iris/infer")
    before = mlserver.inferences("iris")
    other = [6.7, 3.0, 5.2, 2.3]
    inputs = [v2_request(SETOSA), v2_request(other), v2_request([float(x) for x in SETOSA])]
    response = await client.post("/predict/batch", json={"inputs": inputs})
    assert response.status == 200
    results = orjson.loads(await response.read())["results"]
    assert [r["status"] for r in results] == [200, 200, 200]
    assert [r["prediction"]["outputs"][0]["data"] for r in results] == [[0], [2], [0]]
    assert results[0]["prediction"] == results[2]["prediction"]
    assert mlserver.inferences("iris") - before == 2
