"""Hostile and random input: never a 5xx, never a model call, never a Redis write.

The service runs in a thread of its own (schemathesis and hypothesis drive it with blocking HTTP);
its Redis is a private redis-server whose command statistics tell whether anything was written.
"""

from __future__ import annotations

import asyncio
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
import redis
import requests
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import negative_data_rejection

from service.app import create_app
from service.errors import InvalidPair
from service.models.pair import PAIR_PATTERN, parse_pair
from service.settings.config import Settings
from tests.support.models import CountingModel
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.redis

SUPPORTED = frozenset({"ETH-EUR", "BTC-USD"})
# Every command that changes a Redis dataset or tells other replicas something.
WRITE_COMMANDS = ("set", "del", "incr", "publish", "evalsha", "eval", "expire", "pexpire", "unlink")


class ThreadedService:
    """The app on a loopback port, served by an event loop in a background thread."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="service", daemon=True)
        self.runner = web.AppRunner(app)
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ThreadedService:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(timeout=10)
        return self

    async def _start(self) -> None:
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = self.runner.addresses[0][1]

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


class Target:
    def __init__(self, service: ThreadedService, model: CountingModel, server: RedisServer) -> None:
        self.service = service
        self.model = model
        self.server = server
        self.http = requests.Session()
        self.redis = redis.Redis.from_url(server.url)

    def writes(self) -> int:
        """Write commands the private Redis has run so far."""
        stats = self.redis.info("commandstats")
        return sum(int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in WRITE_COMMANDS)

    def settle(self) -> None:
        """Wait until a valid request's writes are all in: the lease release and the "stored" event
        go out after its response, and must not be blamed on the next request."""
        deadline = time.monotonic() + 2.0
        before = self.writes()
        while time.monotonic() < deadline:
            time.sleep(0.02)
            now = self.writes()
            if now == before:
                return
            before = now


@pytest.fixture(scope="module")
def target() -> Iterator[Target]:
    model = CountingModel(version="bad-input", pairs=SUPPORTED)
    with RedisServer() as server:
        settings_ = replace(Settings(), redis_url=server.url, admin_token="s3cret-admin-token")
        app = create_app(settings_, model=model)
        service = ThreadedService(app).start()
        target = Target(service, model, server)
        try:
            yield target
        finally:
            target.http.close()
            target.redis.close()
            service.stop()


def expected_status(raw: str) -> int:
    """What /predict?pair=<raw> must answer: the rule of models/pair.py, and the OpenAPI pattern agrees."""
    matches_spec = re.search(PAIR_PATTERN, raw) is not None and len(raw) <= 21 and "\n" not in raw
    try:
        pair = parse_pair(raw)
    except InvalidPair:
        assert not matches_spec, raw
        return 400
    assert matches_spec, raw
    return 200 if pair in SUPPORTED else 404


# -- schemathesis over the published OpenAPI description ---------------------------------------------


@pytest.fixture(scope="module")
def api_schema(target: Target) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(target.service.url + "/openapi.json")


@pytest.mark.parametrize("mode", [schemathesis.GenerationMode.NEGATIVE, schemathesis.GenerationMode.POSITIVE])
def test_schemathesis_finds_no_server_error(
    target: Target, api_schema: schemathesis.BaseSchema, mode: schemathesis.GenerationMode
) -> None:
    """Every operation, fuzzed from the OpenAPI description: no 5xx, and invalid data is rejected."""
    calls_before = target.model.calls.copy()
    cases: list[str] = []

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(case=api_schema.as_strategy(generation_mode=mode))
    def fuzz(case: schemathesis.Case[Any]) -> None:
        cases.append(case.operation.label)
        case.call_and_validate(
            base_url=target.service.url,
            session=target.http,
            checks=[not_a_server_error, negative_data_rejection],
        )

    fuzz()
    # Negative data needs something to negate: the operations without parameters have none.
    assert len(set(cases)) == (8 if mode is schemathesis.GenerationMode.POSITIVE else 5), set(cases)
    # Only supported pairs ever reach the model (DELETE /cache/{pair} never calls it).
    assert set((target.model.calls - calls_before).keys()) <= SUPPORTED


def test_the_published_description_is_what_is_served(target: Target) -> None:
    spec = target.http.get(target.service.url + "/openapi.json").json()
    parameter = spec["paths"]["/predict"]["get"]["parameters"][0]
    assert parameter["schema"]["pattern"] == PAIR_PATTERN
    assert parameter["schema"]["maxLength"] == 21
    responses = spec["paths"]["/predict"]["get"]["responses"]
    assert set(responses) == {"200", "400", "404", "503", "504"}
    assert set(responses["200"]["headers"]) == {"X-Cache", "Cache-Status", "Age", "Cache-Control"}
    assert spec["paths"]["/cache/{pair}"]["delete"]["security"] == [{"adminToken": []}]


# -- hypothesis over the pair parameter --------------------------------------------------------------

_pair_text = st.one_of(
    st.text(max_size=40),
    st.from_regex(PAIR_PATTERN, fullmatch=True),
    st.sampled_from(sorted(SUPPORTED)).map(lambda p: p.lower().replace("-", "/")),
)


def test_any_pair_text_gets_200_400_or_404_as_the_rule_says(target: Target) -> None:
    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(raw=_pair_text)
    def check(raw: str) -> None:
        writes, calls = target.writes(), target.model.total_calls
        response = target.http.get(target.service.url + "/predict", params={"pair": raw})
        expected = expected_status(raw)
        assert response.status_code == expected, (raw, response.text)
        if expected == 200:
            target.settle()
        else:
            assert response.json()["error"]["code"] in ("invalid_pair", "unknown_pair")
            assert (target.writes(), target.model.total_calls) == (writes, calls)

    target.settle()
    check()


# -- a fixed list of hostile values -------------------------------------------------------------------

HOSTILE_QUERIES = [
    "pair=*",
    "pair=ETH-EUR%00",
    "pair=ETH%E2%80%90EUR",  # U+2010 HYPHEN
    "pair=ETH%E2%88%92EUR",  # U+2212 MINUS SIGN
    "pair=%EF%BC%A5TH-EUR",  # a fullwidth E
    "pair=" + "A" * 10_240,
    "pair=" + "ETH-EUR" * 1500,
    "pair=ETH-EUR&pair=BTC-USD",
    "pair=ETH-EUR&pair=ETH-EUR",
    "pair=",
    "",
    "PAIR=ETH-EUR",
    "pair=ETH-EUR%0D%0ASET%20x%20y",
    "pair=ETH-EUR%0ASET",
    "pair=FLUSHALL",
    "pair=KEYS%20*",
    "pair=CONFIG%20SET%20dir%20/tmp",
    "pair=EVAL%20%22return%201%22%200",
    "pair=SET/KEYS",  # well formed: 404, and never a Redis command
    "pair=DEL-ALL",
    "pair=..%2F..%2Fetc%2Fpasswd",
    "pair=ETH-EUR%20",
    "pair=%20ETH-EUR",
    "pair=ETH--EUR",
    "pair=E-EUR",
    "pair=ETHEREUMXYZ-EUR",
    "pair=%FF%FE",
    "pair[]=ETH-EUR",
]


@pytest.mark.parametrize("query", HOSTILE_QUERIES)
def test_a_hostile_pair_is_rejected_without_touching_model_or_redis(target: Target, query: str) -> None:
    target.settle()
    writes, calls = target.writes(), target.model.total_calls
    response = target.http.get(f"{target.service.url}/predict?{query}")
    assert response.status_code in (400, 404), response.text
    assert response.json()["error"]["code"] in ("invalid_pair", "unknown_pair")
    assert (target.writes(), target.model.total_calls) == (writes, calls)


@pytest.mark.parametrize(
    "pair_path",
    ["*", "ETH-EUR%00", "ETH%E2%80%90EUR", "A" * 10_240, "FLUSHALL", "ETH-EUR%0D%0ADEL%20x", "..%2F.."],
)
def test_a_hostile_pair_on_the_admin_endpoint_changes_nothing(target: Target, pair_path: str) -> None:
    target.settle()
    writes = target.writes()
    headers = {"Authorization": "Bearer s3cret-admin-token"}
    response = target.http.delete(f"{target.service.url}/cache/{pair_path}", headers=headers)
    assert response.status_code in (400, 404, 414), response.text
    assert target.writes() == writes


RAW_REQUESTS = [
    b"GET /predict?pair=ETH-EUR\x00 HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /predict?pair=ETH\xe2\x80\x90EUR HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /predict?pair=ETH-EUR\rSET x y HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /predict?pair=" + b"A" * 40_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /predict?pair=ETH-EUR HTTP/1.1\r\nHost: x\r\nCache-Control: max-age=-1\r\n\r\n",
    b"GET /predict?pair=ETH-EUR HTTP/1.1\r\nHost: x\r\nCache-Control: max-age=" + b"9" * 40 + b"\r\n\r\n",
    b"GET /predict?pair=ETH-EUR HTTP/1.1\r\nHost: x\r\nX-Evil: a\r\n b\r\n\r\n",
    b"GET /predict?pair=ETH%ZZ HTTP/1.1\r\nHost: x\r\n\r\n",
]


@pytest.mark.parametrize("raw", RAW_REQUESTS, ids=range(len(RAW_REQUESTS)))
def test_malformed_requests_on_the_wire_get_no_5xx(target: Target, raw: bytes) -> None:
    """Bytes no HTTP client would send: the parser or the handler refuses them, never with a 5xx."""
    calls = target.model.total_calls
    with socket.create_connection(("127.0.0.1", target.service.port), timeout=5) as sock:
        sock.sendall(raw)
        reply = sock.recv(4096)
    status_line = reply.split(b"\r\n", 1)[0]
    status = int(status_line.split()[1]) if status_line.startswith(b"HTTP/1.") else None
    assert status is not None, reply[:200]
    assert status < 500, reply[:200]
    if b"Cache-Control" not in raw:
        assert target.model.total_calls == calls
