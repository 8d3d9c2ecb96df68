"""The memory benchmark's pieces that run without a service: its model, its report and its targets."""

from __future__ import annotations

import orjson
import pytest

from benchmarks import memory, report, targets
from benchmarks.models import Key, SizedModel


@pytest.mark.parametrize("size", [150, 200_000])
async def test_the_sized_model_answers_bodies_of_its_size(monkeypatch: pytest.MonkeyPatch, size: int) -> None:
    monkeypatch.setenv("BENCH_PREDICTION_BYTES", str(size))
    for key in (7, 12345):
        answer = await SizedModel().predict(Key(key=key))
        assert len(orjson.dumps(answer.model_dump())) == size


def test_report_and_targets_from_a_section() -> None:
    """A row per count and cache, a row per bound; the worst per-entry figure is the target's."""
    held = {"near_copies": 12_000, "near_cache_bytes": 9_792_000}
    section = {
        "settings": {"warmup_keys": 5000},
        "rows": [
            {"kind": "per_entry", "cache": "embedded", "entries": 10_000, "rss_growth_mib": 9.0,
             "bytes_per_entry": 944, "errors": 0, **held},
            {"kind": "per_entry", "cache": "over Redis, near-cache", "entries": 10_000,
             "rss_growth_mib": 16.0, "bytes_per_entry": 1_600, "errors": 0, **held},
            {"kind": "bound", "cache": "embedded", "setting": "CACHE_MAX_BYTES", "bound_mib": 64.0,
             "prediction_bytes": 200_000, "keys": 1000, "rss_start_mib": 72.0, "growth_end_mib": 59.0,
             "growth_peak_mib": 61.0, "slack_mib": 16.0, "within": True, "errors": 0, **held},
        ],
    }  # fmt: skip
    lines = memory.markdown(section)
    assert lines[2] == "| embedded | 10,000 | 9.0 | 944 | 12,000 | < 1,536 B: met |"
    assert lines[3].endswith("| < 1,536 B: NOT met |")
    assert "| embedded, CACHE_MAX_BYTES=64 MiB | 1,000 x 200,000 B | 59.0 | 61.0 | 80 | yes |" in lines
    assert "## 8. Memory" in report.markdown({"memory": section})
    found = {t.name: t for t in targets.evaluate({"memory": section})}
    assert found["memory_per_entry"].met is False
    assert "over Redis" in found["memory_per_entry"].target
    assert found["memory_cache_max_bytes"].met is True
    assert {t.name: t for t in targets.evaluate({})}["memory_per_entry"].met is None
