"""A custom MLServer runtime whose answers a test sets: latency, status, a body that is not JSON, the
version header. Loaded by MLServer itself (`implementation` in its model-settings.json)."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import orjson
from mlserver import MLModel
from mlserver.handlers import custom_handler
from starlette.requests import Request
from starlette.responses import Response

VERSION_HEADER = "X-Model-Version"


class LabRuntime(MLModel):  # type: ignore[misc]  # mlserver ships no type information
    """Serves `POST /lab/predict`: a flat JSON object in, `{"echo": <it>, "call": <n>}` out.

    `POST /lab/behaviour` sets how it answers from then on (any subset of the keys):
    - `sleep_s`: seconds before answering;
    - `status`: the HTTP status, with `{"error": ...}` as the body when it is not 2xx;
    - `not_json`: a 2xx whose body is text;
    - `version`: the `X-Model-Version` header (the model-settings version by default).
    `GET /lab/calls` counts the calls to /lab/predict per canonical body.
    """

    async def load(self) -> bool:
        self.calls: Counter[str] = Counter()
        self.behaviour: dict[str, Any] = {}
        return True

    @custom_handler(rest_path="/lab/behaviour", rest_method="POST")  # type: ignore[untyped-decorator]
    async def set_behaviour(self, request: Request) -> Response:
        self.behaviour = orjson.loads(await request.body())
        self.calls.clear()
        return Response(orjson.dumps(self.behaviour), media_type="application/json")

    @custom_handler(rest_path="/lab/calls", rest_method="GET")  # type: ignore[untyped-decorator]
    async def get_calls(self, request: Request) -> Response:
        return Response(orjson.dumps(self.calls), media_type="application/json")

    @custom_handler(rest_path="/lab/predict", rest_method="POST")  # type: ignore[untyped-decorator]
    async def lab_predict(self, request: Request) -> Response:
        body = orjson.loads(await request.body())
        key = orjson.dumps(body, option=orjson.OPT_SORT_KEYS).decode()
        self.calls[key] += 1
        behaviour = self.behaviour
        await asyncio.sleep(float(behaviour.get("sleep_s", 0)))
        status = int(behaviour.get("status", 200))
        version = str(behaviour.get("version", self.settings.parameters.version))
        headers = {VERSION_HEADER: version}
        if behaviour.get("not_json"):
            return Response(b"OK, but not JSON", status_code=status, media_type="text/plain", headers=headers)
        if status >= 300:
            content = orjson.dumps({"error": f"lab says {status}", "input": body})
        else:
            content = orjson.dumps({"echo": body, "call": sum(self.calls.values())})
        return Response(content, status_code=status, media_type="application/json", headers=headers)
