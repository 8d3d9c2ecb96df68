"""GET / and GET /docs in a real headless browser (Debian's chromium, driven by Playwright), with
every request off the loopback interface refused: the pages and the docs need no network."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, Page, Route, expect, sync_playwright

from tests.support.service_process import ServiceProcess
from tests.support.tools import require_tool

pytestmark = pytest.mark.slow

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
    "--disable-gpu",
    # No calls home: the test's point is that nothing leaves the machine.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}
# Swagger UI renders a 1.5 MB script on a shared 2-core machine: generous, not a timing claim.
TIMEOUT_MS = 30_000
expect.set_options(timeout=TIMEOUT_MS)


@pytest.fixture(scope="module")
def service() -> Iterator[ServiceProcess]:
    with ServiceProcess("--demo-model-latency", "0") as service:
        yield service


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's chromium (Playwright's own browser download is not reachable): skipped locally when
    it is missing, a failure in CI (PREDCACHE_REQUIRE_TOOLS), which installs it."""
    chromium = require_tool("chromium", install="apt-get update && apt-get install -y chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh page whose requests may go to loopback only; the others are aborted and remembered,
    and the test fails if there was any."""
    refused: list[str] = []

    def loopback_only(route: Route) -> None:
        if urlsplit(route.request.url).hostname in LOOPBACK:
            route.continue_()
        else:
            refused.append(route.request.url)
            route.abort("internetdisconnected")

    context = browser.new_context()
    context.set_default_timeout(TIMEOUT_MS)
    context.route("**/*", loopback_only)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    context.close()
    assert refused == [], "the page tried to reach the network"
    assert errors == [], "the page's scripts raised"


def test_the_front_page_names_the_model_and_links_the_docs(page: Page, service: ServiceProcess) -> None:
    page.goto(service.url + "/")
    expect(page.locator("h1")).to_have_text("predcache")
    expect(page.locator("body")).to_contain_text("service.models.demo:DemoModel")
    expect(page.locator("body")).to_contain_text("demo-1")
    # Every endpoint is listed; /healthz is a link that answers.
    expect(page.locator("td code", has_text="/predict/batch")).to_be_visible()
    page.get_by_role("link", name="/healthz").click()
    expect(page.locator("body")).to_contain_text('"status":"ok"')
    page.go_back()
    page.get_by_role("link", name="Try the API in your browser").click()
    page.wait_for_url(service.url + "/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("predcache")
    # GET /predict's link opens its operation in the docs, ready to try.
    page.goto(service.url + "/")
    page.get_by_role("link", name="/predict", exact=True).click()
    expect(page.locator("#operations-default-predictGet")).to_contain_text("Try it out")


def test_try_it_out_on_get_predict_shows_a_prediction(page: Page, service: ServiceProcess) -> None:
    page.goto(service.url + "/docs")
    operation = page.locator("#operations-default-predictGet")
    expect(operation.locator(".opblock-summary-path")).to_have_attribute("data-path", "/predict")
    operation.locator(".opblock-summary-control").click()
    operation.get_by_role("button", name="Try it out").click()
    operation.locator('tr[data-param-name="pair"] input').fill("ETH-EUR")
    operation.get_by_role("button", name="Execute").click()
    # The response Swagger UI received and shows (not the documented ones listed below it).
    answer = operation.locator(".live-responses-table tbody tr.response")
    expect(answer.locator(".response-col_status")).to_have_text("200")
    shown = answer.locator(".response-col_description")
    expect(shown.locator(".microlight").first).to_contain_text('"pair": "ETH-EUR"')
    expect(shown.locator(".microlight").first).to_contain_text('"predicted_price"')
    # This service answered it: its own headers are shown. (A MISS, and always so here: with its
    # requests routed, Chromium bypasses its cache and sends Cache-Control: no-cache.)
    expect(shown).to_contain_text("x-cache: MISS")
    expect(shown).to_contain_text("server: predcache")
