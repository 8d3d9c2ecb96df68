"""GET / (the model, its version and the endpoints: HTML for a browser, JSON otherwise) and GET /docs
with its Swagger UI files, over HTTP; tests/test_browser.py renders them in a real browser."""

from __future__ import annotations

import re
from pathlib import Path

import orjson
import pytest

from service.http.api_docs import ASSETS
from service.http.front_page import model_name, prefers_html
from service.models.upstream import UpstreamModel
from tests.conftest import MakeClient
from tests.support.models import CountingModel

BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"


@pytest.mark.parametrize("accept", [None, "*/*", "application/json", "application/json, text/html"])
async def test_the_front_page_is_json_for_anything_but_a_browser(
    make_client: MakeClient, accept: str | None
) -> None:
    client = await make_client(model=CountingModel(version="front-1"))
    response = await client.get("/", headers={} if accept is None else {"Accept": accept})
    assert response.status == 200
    assert response.content_type == "application/json"
    assert response.headers["Vary"] == "Accept"
    page = await response.json()
    assert page["model"] == {"name": "tests.support.models:CountingModel", "version": "front-1"}
    assert (page["docs"], page["openapi"]) == ("/docs", "/openapi.json")
    # Every operation of the OpenAPI description is listed, and the two pages for people.
    spec = await (await client.get("/openapi.json")).json()
    described = {(m.upper(), path) for path, ops in spec["paths"].items() for m in ops}
    listed = {(e["method"], e["path"]) for e in page["endpoints"]}
    assert listed == described | {("GET", "/docs"), ("GET", "/openapi.json")}
    assert ("GET", "/predict") in listed


async def test_the_front_page_is_html_for_a_browser_and_its_links_answer(make_client: MakeClient) -> None:
    client = await make_client(model=CountingModel(version="<v2>"))
    response = await client.get("/", headers={"Accept": BROWSER_ACCEPT})
    assert response.status == 200
    assert response.content_type == "text/html"
    html = await response.text()
    assert "tests.support.models:CountingModel" in html
    # Everything shown is escaped: a version is the model's text, not markup.
    assert "<code>&lt;v2&gt;</code>" in html
    assert "<v2>" not in html
    links = re.findall(r'href="([^"]*)"', html)
    assert {"/docs", "/openapi.json", "/healthz", "/docs#/default/predictGet"} <= set(links)
    for link in links:
        assert (await client.get(link.split("#")[0])).status == 200, link


def test_an_upstream_is_named_without_its_credentials_or_query() -> None:
    upstream = UpstreamModel(
        "https://user:pw-Zx81@models.internal:8443/v2/models/iris/infer?api_key=k-9917",
        "iris-1",
        timeout_s=1.0,
    )
    assert model_name(upstream) == "https://models.internal:8443/v2/models/iris/infer"


@pytest.mark.parametrize(
    ("accept", "html"),
    [
        (None, False),
        ("*/*", False),
        ("application/json", False),
        (BROWSER_ACCEPT, True),
        ("text/*", True),
        ("text/html;q=0.5, application/json;q=0.4", True),
        ("text/html;q=0", False),
        ("application/json, text/html", False),  # a tie goes to JSON, the API's own language
        ("text/html;q=oops", False),
    ],
)
def test_accept_decides_html_or_json(accept: str | None, html: bool) -> None:
    assert prefers_html(accept) is html


@pytest.fixture
def swagger_ui_files() -> dict[str, bytes]:
    """The package's files /docs serves, as they are on disk."""
    return {name: Path(path).read_bytes() for name, (path, _) in ASSETS.items()}


async def test_docs_is_swagger_ui_on_this_services_own_files(
    make_client: MakeClient, swagger_ui_files: dict[str, bytes]
) -> None:
    client = await make_client(model=CountingModel())
    response = await client.get("/docs")
    assert response.status == 200
    assert response.content_type == "text/html"
    page = await response.text()
    assert 'url: "/openapi.json"' in page
    assert "validatorUrl: null" in page  # else the description would go to an online validator
    # Every file the page loads is this service's own.
    sources = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert len(sources) == 4  # the CSS, the icon, the way back to / and the script
    assert all(source.startswith("/") for source in sources), sources
    for name, (_, content_type) in ASSETS.items():
        asset = await client.get(f"/docs/{name}")
        assert asset.status == 200, name
        assert asset.headers["Content-Type"] == content_type
        assert await asset.read() == swagger_ui_files[name]
    assert len(swagger_ui_files["swagger-ui-bundle.js"]) > 1_000_000  # the real bundle, not a stub


@pytest.mark.parametrize("name", ["index.j2", "swagger-ui-bundle.js.map", "..%2F..%2F__init__.py", "x"])
async def test_only_the_listed_swagger_ui_files_are_served(make_client: MakeClient, name: str) -> None:
    client = await make_client(model=CountingModel())
    response = await client.get(f"/docs/{name}")
    assert response.status == 404
    assert orjson.loads(await response.read())["error"]["code"] == "not_found"
