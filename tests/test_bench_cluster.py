"""The cluster and failover benchmarks' report and targets: a section renders, and a run that misses
a bound is reported as not met, naming the run."""

from __future__ import annotations

from collections.abc import Mapping

from benchmarks import report, targets

FAILOVER_ROW = {
    "mode": "cluster",
    "how": "SIGKILL",
    "requests": 1200,
    "rate": 100.0,
    "failover_s": 3.7,
    "non_2xx": 0,
    "slowest_ms": 8.0,
    "slowest_bound_ms": 1700,
    "model_calls": 0.0,
    "model_calls_per_key": 0.0,
    "late_requests": 300,
    "late_hits": 300,
    "late_local_answers": 0.0,
}
FAILOVER_SETTINGS = {
    "rate": 100.0,
    "duration_s": 12.0,
    "kill_at_s": 3.0,
    "model_latency_s": 0.2,
    "redis_timeout_s": 0.5,
    "keys": 18,
}


def target(results: Mapping[str, Mapping[str, object]], name: str) -> targets.TargetResult:
    return next(t for t in targets.evaluate(results) if t.name == name)


def test_a_clean_failover_run_meets_its_target_and_renders() -> None:
    results = {"failover": {"settings": FAILOVER_SETTINGS, "rows": [FAILOVER_ROW]}}
    assert target(results, "failover_costs_no_request").met is True
    text = report.markdown({**results, "machine": {}, "targets": []})
    assert "## 7. Failover under load" in text
    assert "| cluster | SIGKILL | 3.70 | 1200 | 0 | 8 | 0 (0) | 300 of 300 | 0 |" in text


def test_a_failover_answered_from_local_copies_misses_its_target() -> None:
    """HITs after the failover that came from a replica's own copy do not count as Redis being back."""
    row = {**FAILOVER_ROW, "mode": "sentinel", "late_local_answers": 12.0}
    found = target({"failover": {"settings": FAILOVER_SETTINGS, "rows": [row]}}, "failover_costs_no_request")
    assert found.met is False
    assert "sentinel SIGKILL" in found.margin


def test_the_cluster_stampede_target_needs_one_call_per_key_over_the_cluster() -> None:
    def row(redis: str, calls: int) -> dict[str, object]:
        return {"redis": redis, "replicas": 3, "keys": 20, "model_calls": calls, "meets_target": calls == 20}

    met = {"cluster": {"stampede": [row("single", 21), row("cluster", 20)]}}
    assert target(met, "cluster_stampede_one_call_per_key").met is True
    missed = {"cluster": {"stampede": [row("cluster", 22)]}}
    assert target(missed, "cluster_stampede_one_call_per_key").met is False
    assert target({}, "cluster_stampede_one_call_per_key").met is None
