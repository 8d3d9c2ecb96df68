"""`python -m loadtest compare`: ratios per class and warnings about differing settings."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from loadtest.cli import main
from loadtest.compare import compare_runs
from loadtest.stats import Recorder
from loadtest.summary import RunSummary, summarize


def _run(latencies_ms: dict[str, float], count: int = 50, **settings: object) -> RunSummary:
    recorder = Recorder()
    for response_class, latency_ms in latencies_ms.items():
        for _ in range(count):
            recorder.record(response_class, 200, 100, int(latency_ms * 1000), int(latency_ms * 1000))
    run_settings = {"url": "http://127.0.0.1:8000/predict", "concurrency": 10, **settings}
    return summarize(recorder, run_settings, started_at="", duration_s=1.0, open_loop=False)


def _write(path: Path, run: RunSummary) -> str:
    path.write_bytes(orjson.dumps(run.to_json()))
    return str(path)


def test_speedup_is_before_over_after_per_class() -> None:
    """A 1000 ms MISS-only run against a 0.5 ms HIT run is a 2000x speed-up at p50."""
    comparison = compare_runs(_run({"MISS": 1000.0}), _run({"HIT": 0.5}))
    overall_p50 = next(f for f in comparison.latencies if f.scope == "all" and f.metric == "p50")
    assert overall_p50.speedup == pytest.approx(2000, rel=2e-3)
    hit_p50 = next(f for f in comparison.latencies if f.scope == "HIT" and f.metric == "p50")
    assert hit_p50.before is None
    assert hit_p50.speedup is None
    assert comparison.settings_differences == []


def test_compare_prints_both_runs_and_the_ratio(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The headline reads `p50: 1000 ms -> 0.5 ms, 2000x`, with a row per class."""
    before = _write(tmp_path / "before.json", _run({"MISS": 1000.0}))
    after = _write(tmp_path / "after.json", _run({"HIT": 0.5, "MISS": 1000.0}, count=10))
    status = main(["compare", before, after])
    out = capsys.readouterr().out
    assert status == 0
    assert "p50: 1000.4 ms -> 0.500 ms, 2001x" in out
    assert "warning" not in out
    assert "│ HIT" in out
    assert "│ MISS" in out


def test_compare_warns_when_settings_differ(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Runs with different load settings are still compared, with a warning naming the setting."""
    before = _write(tmp_path / "before.json", _run({"MISS": 10.0}, concurrency=10))
    after = _write(tmp_path / "after.json", _run({"MISS": 5.0}, concurrency=50))
    assert main(["compare", before, after]) == 0
    assert "warning: settings differ: concurrency 10 -> 50" in capsys.readouterr().out


def test_compare_rejects_a_file_that_is_not_a_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A JSON file of another shape is a usage error on one line."""
    bogus = tmp_path / "bogus.json"
    bogus.write_text('{"hello": 1}')
    good = _write(tmp_path / "good.json", _run({"HIT": 1.0}))
    assert main(["compare", str(bogus), good]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"loadtest: error: {bogus}: not a loadtest run")
    assert len(err.splitlines()) == 1
