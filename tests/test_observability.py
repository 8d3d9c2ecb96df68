"""deploy/grafana and deploy/prometheus: every expression names only metrics (and labels) a running
service exports, read from a live scrape so metrics added later count; promtool checks and unit-tests
the alerts, and checks the dashboard's expressions parse."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from service.app import create_app
from service.settings.config import Settings
from tests.conftest import MakeClient
from tests.support.models import CountingModel
from tests.support.promql import FUNCTIONS, as_promql, references
from tests.support.scripted_upstream import ScriptedUpstream
from tests.support.tools import require_tool

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "deploy" / "grafana" / "predcache.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
ALERT_TESTS = ROOT / "deploy" / "prometheus" / "alerts.test.yml"
# Labels Prometheus itself adds to every scraped series.
TARGET_LABELS = frozenset({"job", "instance"})
# What the issue asks the dashboard and alerts to show, by the metric that shows it.
DASHBOARD_MUST_SHOW = {
    "hit ratio by outcome": "predcache_cache_lookups_total",
    "model calls per second": "predcache_model_calls_total",
    "model call duration": "predcache_model_duration_seconds_bucket",
    "coalesced requests": "predcache_singleflight_coalesced_total",
    "request latency by endpoint": "predcache_request_duration_seconds_bucket",
    "breaker openings": "predcache_redis_breaker_opened_total",
    "lease waits": "predcache_lease_waits_total",
    "lease fallbacks": "predcache_lease_fallbacks_total",
    "LLM tokens saved": "predcache_llm_cached_tokens_total",
    "LLM upstream time to first token": "predcache_llm_upstream_ttft_seconds_bucket",
}
ALERTS_MUST_WATCH = {
    "PredcacheCacheDegraded": "predcache_local_cache_only",
    "PredcacheHitRatioCollapsed": "predcache_cache_lookups_total",
    "PredcacheModelErrors": "predcache_model_errors_total",
    "PredcacheModelLatencyNearTimeout": "predcache_model_duration_seconds_bucket",
    "PredcacheLeaseTimeouts": "predcache_lease_timeouts_total",
}

Exported = dict[str, set[str]]  # sample name -> its label names


@pytest.fixture
async def exported(
    make_client: MakeClient, redis: Redis, model_version: str, aiohttp_client: Any, aiohttp_server: Any
) -> Exported:
    """The samples of a service on Redis after a miss, a hit and a call to every other GET endpoint,
    so labelled metrics (per endpoint and status) have children too; and of an LLM gateway
    (MODEL=openai+...) after a miss and a hit, for the metrics only it moves."""
    client = await make_client(model=CountingModel(version=model_version), redis=redis)
    for _ in range(2):
        assert (await client.get("/predict", params={"pair": "ETH-EUR"})).status == 200
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
        assert (await client.get(path)).status == 200
    samples: Exported = {}
    scrape(await (await client.get("/metrics")).text(), samples)
    upstream = await aiohttp_server(ScriptedUpstream().app())
    settings = Settings(
        model=f"openai+{upstream.make_url('/v1')}", model_version=model_version, cache_scope_secret="s"
    )
    gateway = await aiohttp_client(create_app(settings, redis=redis))
    chat = {"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": 0}
    for _ in range(2):
        assert (await gateway.post("/v1/chat/completions", json=chat)).status == 200
    scrape(await (await gateway.get("/metrics")).text(), samples)
    return samples


def scrape(text: str, samples: Exported) -> None:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, set()).update(sample.labels)


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", [])  # collapsed rows hold their panels


def dashboard_expressions() -> dict[str, str]:
    """`panel title / refId` -> expression, for every query of every panel."""
    return {
        f"{panel['title']} / {target['refId']}": target["expr"]
        for panel in panels(dashboard())
        for target in panel.get("targets", [])
    }


def variable_queries() -> dict[str, str]:
    """The dashboard variables' queries, `label_values(<selector>, label)`, as their selectors."""
    found = {}
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
            inner = query.removeprefix("label_values(").rsplit(",", 1)[0]
            found[f"variable {variable['name']}"] = inner
    return found


def alert_rules() -> dict[str, str]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return {rule["alert"]: rule["expr"] for group in groups for rule in group["rules"] if "alert" in rule}


def unknown_names(expression: str, exported: Exported) -> list[str]:
    """What `expression` names that the service does not export, as readable complaints."""
    refs = references(as_promql(expression))
    problems = [f"metric {m}" for m in sorted(refs.metrics - set(exported))]
    problems += [f"function {f}" for f in sorted(refs.functions - FUNCTIONS)]
    for metric, labels in refs.matcher_labels.items():
        extra = labels - exported.get(metric, set()) - TARGET_LABELS
        problems += [f"label {label} of {metric}" for label in sorted(extra)]
    labels_of_named = set().union(*(exported.get(m, set()) for m in refs.metrics)) | TARGET_LABELS
    problems += [f"grouping label {label}" for label in sorted(refs.grouping_labels - labels_of_named)]
    return problems


# -- the checker itself ---------------------------------------------------------------------------


def test_the_scrape_holds_counters_with_total_and_histograms_by_bucket(exported: Exported) -> None:
    assert "predcache_model_calls_total" in exported
    assert {"endpoint", "le"} <= exported["predcache_request_duration_seconds_bucket"]
    assert "predcache_model_duration_seconds_count" in exported


def test_the_checker_names_a_metric_label_or_function_the_service_lacks(exported: Exported) -> None:
    assert not unknown_names(
        'sum by (result) (rate(predcache_cache_lookups_total{result="hit", job=~"$job"}[5m]))', exported
    )
    assert unknown_names("rate(predcache_model_calls[5m])", exported) == ["metric predcache_model_calls"]
    assert unknown_names('rate(predcache_model_calls_total{reslt="x"}[5m])', exported) == [
        "label reslt of predcache_model_calls_total"
    ]
    assert unknown_names("sum by (endpint) (rate(predcache_requests_total[5m]))", exported) == [
        "grouping label endpint"
    ]
    assert unknown_names("histogram_quantil(0.9, predcache_model_duration_seconds_bucket)", exported) == [
        "function histogram_quantil"
    ]
    assert unknown_names("up == 0 and process_resident_memory_bytes > 1e9", exported) == [
        "metric process_resident_memory_bytes",
        "metric up",
    ]


# -- the dashboard --------------------------------------------------------------------------------


def test_every_dashboard_expression_names_only_what_the_service_exports(exported: Exported) -> None:
    expressions = dashboard_expressions() | variable_queries()
    assert expressions
    problems = {where: bad for where, expr in expressions.items() if (bad := unknown_names(expr, exported))}
    assert not problems


def test_the_dashboard_shows_what_the_issue_asks_for() -> None:
    named = set().union(*(references(as_promql(e)).metrics for e in dashboard_expressions().values()))
    missing = [what for what, metric in DASHBOARD_MUST_SHOW.items() if metric not in named]
    assert not missing


def test_dashboard_panels_have_unique_ids_and_use_the_datasource_variable() -> None:
    board = dashboard()
    ids = [panel["id"] for panel in panels(board)]
    assert len(ids) == len(set(ids))
    assert [v["name"] for v in board["templating"]["list"] if v["type"] == "datasource"] == ["datasource"]
    for panel in panels(board):
        if panel.get("targets"):
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]


def test_every_dashboard_expression_parses(tmp_path: Path) -> None:
    """promtool parses each one as a recording rule, its Grafana variables replaced."""
    promtool = require_tool("promtool")
    rules = [
        {"record": f"predcache:dashboard_check_{i}", "expr": as_promql(expr)}
        for i, expr in enumerate(dashboard_expressions().values())
    ]
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


# -- the alerts -----------------------------------------------------------------------------------


def test_every_alert_expression_names_only_what_the_service_exports(exported: Exported) -> None:
    rules = alert_rules()
    problems = {alert: bad for alert, expr in rules.items() if (bad := unknown_names(expr, exported))}
    assert not problems


def test_the_alerts_the_issue_asks_for_watch_their_metric() -> None:
    rules = alert_rules()
    assert set(rules) == set(ALERTS_MUST_WATCH)
    for alert, metric in ALERTS_MUST_WATCH.items():
        assert metric in references(rules[alert]).metrics, alert


def test_promtool_checks_the_rules() -> None:
    promtool = require_tool("promtool")
    done = subprocess.run(
        [promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_has_a_unit_test_and_they_pass() -> None:
    """alerts.test.yml expects each alert to fire on its own input series (and stay quiet on others)."""
    promtool = require_tool("promtool")
    tests = yaml.safe_load(ALERT_TESTS.read_text())["tests"]
    firing = {
        case["alertname"] for test in tests for case in test.get("alert_rule_test", []) if case["exp_alerts"]
    }
    assert firing == set(alert_rules())
    done = subprocess.run(
        [promtool, "test", "rules", ALERT_TESTS.name],
        cwd=ALERT_TESTS.parent,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
