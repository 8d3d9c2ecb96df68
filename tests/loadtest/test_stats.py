"""Recording, percentiles, classes and the JSON form of a run."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loadtest.classes import classify, classify_batch
from loadtest.stats import (
    HIGHEST_TRACKABLE_US,
    LATENCY_KEYS,
    LatencySummary,
    Recorder,
    decode_histogram,
    log_buckets,
    merge_histograms,
)
from loadtest.summary import RunSummary, summarize


def _exact_percentile_us(values: list[int], percentile: float) -> int:
    """The nearest-rank percentile, as HdrHistogram defines it."""
    ordered = sorted(values)
    rank = max(1, int(percentile * len(ordered) / 100 + 0.5))
    return ordered[rank - 1]


def _summary_of(latencies_us: dict[str, list[int]]) -> RunSummary:
    recorder = Recorder()
    for response_class, values in latencies_us.items():
        for value in values:
            recorder.record(response_class, 200, 10, value, value)
    return summarize(recorder, {"concurrency": 1}, started_at="", duration_s=1.0, open_loop=False)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=600_000_000), min_size=1, max_size=400))
def test_percentiles_match_exact_values_within_histogram_precision(values: list[int]) -> None:
    """Every reported percentile is within 0.1% (3 significant digits) of the exact nearest-rank value."""
    recorder = Recorder()
    for value in values:
        recorder.record("HIT", 200, 10, value, value)
    latency = LatencySummary.from_histogram(recorder.corrected["HIT"])
    for key, percentile in (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p999", 99.9)):
        exact_ms = _exact_percentile_us(values, percentile) / 1000
        assert latency.value(key) == pytest.approx(exact_ms, rel=1e-3, abs=1e-3)
    assert latency.min == pytest.approx(min(values) / 1000, rel=1e-3, abs=1e-3)
    assert latency.max == pytest.approx(max(values) / 1000, rel=1e-3, abs=1e-3)
    assert latency.count == len(values)


def test_latency_summary_is_per_class_and_overall() -> None:
    """Each class gets its own figures, and the overall figures cover every class."""
    summary = _summary_of({"HIT": [1_000] * 90, "MISS": [1_000_000] * 10})
    assert summary.classes["HIT"].p99 == pytest.approx(1.0, rel=1e-3)
    assert summary.classes["MISS"].p50 == pytest.approx(1000.0, rel=1e-3)
    assert summary.latency.p50 == pytest.approx(1.0, rel=1e-3)
    assert summary.latency.p99 == pytest.approx(1000.0, rel=1e-3)
    assert summary.hit_ratio == pytest.approx(0.9)


def test_values_beyond_the_range_are_clamped_not_dropped() -> None:
    """A latency longer than an hour still counts, as the longest trackable value."""
    summary = _summary_of({"MISS": [HIGHEST_TRACKABLE_US * 2, 0]})
    assert summary.requests == 2
    assert summary.classes["MISS"].count == 2


@pytest.mark.parametrize(
    ("x_cache", "cache_status", "expected"),
    [
        ("HIT", "predcache; hit; ttl=3", "HIT"),
        ("MISS", "predcache; fwd=uri-miss; stored", "MISS"),
        ("MISS", "predcache; fwd=uri-miss; collapsed", "collapsed"),
        ("STALE", "predcache; hit; fwd=stale", "STALE"),
        ("hit", None, "HIT"),
        (None, "predcache; hit; ttl=3", "HIT"),
        (None, "predcache; fwd=uri-miss; stored", "MISS"),
        (None, "predcache; hit; fwd=stale", "STALE"),
        (None, None, "none"),
        ("BYPASS", None, "other"),
    ],
)
def test_classify_reads_x_cache_and_cache_status(
    x_cache: str | None, cache_status: str | None, expected: str
) -> None:
    """The class comes from X-Cache, except that Cache-Status's `collapsed` wins and fills in for it."""
    assert classify(x_cache, cache_status) == expected


def test_errors_are_counted_by_kind_in_the_error_class() -> None:
    """Failed requests land in class "error" and in the error count, and are not answered requests."""
    recorder = Recorder()
    recorder.record("HIT", 200, 10, 500, 500)
    recorder.record_error("timeout", 0, 0, 10_000_000, 10_000_000)
    recorder.record_error("HTTP 503", 503, 40, 2_000, 2_000)
    summary = summarize(recorder, {}, started_at="", duration_s=1.0, open_loop=False)
    assert summary.errors == 2
    assert summary.errors_by_kind == {"HTTP 503": 1, "timeout": 1}
    assert summary.status_codes == {200: 1, 503: 1}
    assert summary.classes["error"].count == 2
    assert summary.error_rate == pytest.approx(2 / 3)
    assert summary.hit_ratio == 1.0


def test_json_round_trip_keeps_figures_and_histograms() -> None:
    """A run read back from its JSON has the same figures, and its histograms reproduce them."""
    summary = _summary_of({"HIT": list(range(100, 10_000, 7)), "MISS": [900_000, 1_000_000, 1_100_000]})
    restored = RunSummary.from_json(summary.to_json())
    assert restored.to_json() == summary.to_json()
    merged = merge_histograms(decode_histogram(h) for h in restored.histograms["corrected"].values())
    assert merged.get_value_at_percentile(99) / 1000 == pytest.approx(summary.latency.p99)
    assert list(summary.latency.as_dict()) == list(LATENCY_KEYS)


def test_log_buckets_follow_1_2_5_steps() -> None:
    """Histogram buckets are 1-2-5 steps in ms, covering the recorded range with empty ones shown."""
    recorder = Recorder()
    for value_us in (150, 180, 900, 40_000):
        recorder.record("HIT", 200, 0, value_us, value_us)
    buckets = log_buckets(recorder.corrected["HIT"])
    assert buckets[0] == (0.2, 2)
    assert (1.0, 1) in buckets
    assert (2.0, 0) in buckets
    assert buckets[-1] == (50.0, 1)
    assert sum(count for _, count in buckets) == 4


def test_classify_batch_reads_each_result() -> None:
    """Each result's `cache` gives its class; an item's own 404/503/504 is an error of that status."""
    body = orjson.dumps(
        {
            "results": [
                {"status": 200, "cache": "HIT", "prediction": {}},
                {"status": 200, "cache": "STALE", "prediction": {}},
                {"status": 200, "cache": "MISS", "prediction": {}},
                {"status": 200, "cache": "collapsed", "prediction": {}},
                {"status": 200, "cache": "WARM", "prediction": {}},
                {"status": 200, "prediction": {}},
                {"status": 404, "error": {"code": "unknown_input", "message": "no"}},
                {"status": 504, "error": {"code": "model_timeout", "message": "slow"}},
            ]
        }
    )
    assert classify_batch(200, body, 8) == [
        (200, "HIT", None),
        (200, "STALE", None),
        (200, "MISS", None),
        (200, "collapsed", None),
        (200, "other", None),
        (200, "none", None),
        (404, "error", "HTTP 404"),
        (504, "error", "HTTP 504"),
    ]


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (400, b'{"error": {"code": "invalid_input"}}', "HTTP 400"),
        (503, b"", "HTTP 503"),
        (200, b"not json", "bad batch response"),
        (200, b'{"results": [{"status": 200, "cache": "HIT"}]}', "bad batch response"),  # 1 of 2
        (200, b'{"results": "nope"}', "bad batch response"),
        (200, b"[]", "bad batch response"),
    ],
)
def test_a_failed_or_malformed_batch_fails_every_item(status: int, body: bytes, kind: str) -> None:
    """A batch refused as a whole, or a body not holding one result per item, makes each item an error."""
    assert classify_batch(status, body, 2) == [(status, "error", kind)] * 2


def test_record_batch_counts_items_and_one_http_request() -> None:
    """A batch adds its items to the counts and classes, and one HTTP request; bytes are counted once."""
    recorder = Recorder()
    recorder.record("HIT", 200, 10, 1000, 1000)
    recorder.record_batch(
        [(200, "HIT", None), (200, "MISS", None), (404, "error", "HTTP 404")], 300, 5000, 4000
    )
    summary = summarize(recorder, {}, started_at="", duration_s=1.0, open_loop=False)
    assert (summary.requests, summary.http_request_count, summary.errors) == (4, 2, 1)
    assert summary.bytes_received == 310
    assert summary.status_codes == {200: 3, 404: 1}
    assert summary.errors_by_kind == {"HTTP 404": 1}
    assert summary.classes["MISS"].max == pytest.approx(5.0, rel=0.01)
    assert summary.hit_ratio == pytest.approx(2 / 3)
    again = RunSummary.from_json(orjson.loads(orjson.dumps(summary.to_json())))
    assert again.http_request_count == 2


def test_a_run_written_before_batches_reads_one_http_request_per_item() -> None:
    """JSON without `http_requests` (older runs) reads as one HTTP request per request."""
    recorder = Recorder()
    recorder.record("HIT", 200, 10, 1000, 1000)
    data = summarize(recorder, {}, started_at="", duration_s=1.0, open_loop=False).to_json()
    del data["http_requests"]
    assert RunSummary.from_json(data).http_request_count == 1
