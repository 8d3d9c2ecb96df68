"""Parsing and checking `--fail-on` expressions."""

from __future__ import annotations

import pytest

from loadtest.stats import Recorder
from loadtest.summary import summarize
from loadtest.thresholds import Threshold, ThresholdError, evaluate, parse_threshold


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("p99<200ms", Threshold("p99<200ms", "p99", "<", 200.0)),
        ("p99<0.2s", Threshold("p99<0.2s", "p99", "<", 200.0)),
        ("p50 <= 500us", Threshold("p50 <= 500us", "p50", "<=", 0.5)),
        ("p99.9<1s", Threshold("p99.9<1s", "p999", "<", 1000.0)),
        ("HIT.p95<5ms", Threshold("HIT.p95<5ms", "p95", "<", 5.0, "HIT")),
        ("hit.p99.9<5", Threshold("hit.p99.9<5", "p999", "<", 5.0, "HIT")),
        ("collapsed.count>=1", Threshold("collapsed.count>=1", "count", ">=", 1.0, "collapsed")),
        ("error_rate<1%", Threshold("error_rate<1%", "error_rate", "<", 0.01)),
        ("hit_ratio>0.9", Threshold("hit_ratio>0.9", "hit_ratio", ">", 0.9)),
        ("throughput_rps>100", Threshold("throughput_rps>100", "throughput_rps", ">", 100.0)),
    ],
)
def test_expressions_parse_to_a_metric_in_its_scale(expression: str, expected: Threshold) -> None:
    """Latency limits are converted to ms and percentages to fractions."""
    assert parse_threshold(expression) == expected


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ("p98<1ms", "unknown metric 'p98'"),
        ("HITS.p99<1ms", "unknown class 'HITS'"),
        ("HIT.error_rate<1%", "unknown per-class metric 'error_rate'"),
        ("p99<1h", "unknown latency unit 'h'"),
        ("hit_ratio>90ms", "unit 'ms' does not apply to hit_ratio"),
        ("p99 = 3ms", "expected METRIC<VALUE"),
        ("", "expected METRIC<VALUE"),
    ],
)
def test_unknown_metrics_classes_and_units_are_errors(expression: str, reason: str) -> None:
    """Anything not understood is an error naming the problem, never a threshold that silently passes."""
    with pytest.raises(ThresholdError, match=reason):
        parse_threshold(expression)


def test_evaluation_against_a_run() -> None:
    """Thresholds compare the run's figures; a class the run never saw fails."""
    recorder = Recorder()
    for _ in range(99):
        recorder.record("HIT", 200, 1, 1_000, 1_000)
    recorder.record("MISS", 200, 1, 1_000_000, 1_000_000)
    summary = summarize(recorder, {}, started_at="", duration_s=2.0, open_loop=False)
    verdicts = {
        expression: evaluate(parse_threshold(expression), summary).passed
        for expression in (
            "HIT.p99<2ms",
            "p99<2ms",
            "p999>900ms",
            "hit_ratio>0.9",
            "hit_ratio>=99.5%",
            "throughput_rps>=50",
            "error_rate<=0%",
            "STALE.p99<1s",
        )
    }
    assert verdicts == {
        "HIT.p99<2ms": True,
        "p99<2ms": True,
        "p999>900ms": True,
        "hit_ratio>0.9": True,
        "hit_ratio>=99.5%": False,
        "throughput_rps>=50": True,
        "error_rate<=0%": True,
        "STALE.p99<1s": False,
    }
    assert evaluate(parse_threshold("STALE.p99<1s"), summary).observed is None
