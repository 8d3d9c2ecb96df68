"""The miss-path benchmark's pieces: its models, its ideal, its inputs file and its report."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from benchmarks import misspath, report, targets
from benchmarks.models import BatchedKeyModel, Key, KeyModel, KeyPrediction
from loadtest.workload import load_inputs


def test_the_ideal_is_full_batches_back_to_back() -> None:
    """1000 keys in batches of 32: ceil(1000/32) = 32 calls of 20 + 32 x 0.5 = 36 ms, 1.152 s."""
    assert misspath.ideal(misspath.MissPathSettings()) == (32, 32 * 0.036)


async def test_key_models_cost_20_ms_plus_half_a_ms_per_item() -> None:
    """predict takes 20.5 ms; predict_batch 20 ms + 0.5 ms per item and answers in order; both typed."""
    single, batched = KeyModel(), BatchedKeyModel()
    started = time.perf_counter()
    assert await single.predict(Key(key=3)) == KeyPrediction(key=3, value=1.5, model_version="bench-key-1")
    assert time.perf_counter() - started >= 0.0205
    started = time.perf_counter()
    answers = await batched.predict_batch([Key(key=k) for k in range(40)])
    assert time.perf_counter() - started >= 0.040
    assert [answer.key for answer in answers] == list(range(40))
    assert not hasattr(single, "predict_batch")
    assert batched.version != single.version
    assert Key.model_config.get("extra") == "forbid"


async def test_batched_calls_are_concurrent_safe() -> None:
    """Two batch calls at once each answer their own keys."""
    model = BatchedKeyModel()
    first, second = await asyncio.gather(
        model.predict_batch([Key(key=1), Key(key=2)]), model.predict_batch([Key(key=3)])
    )
    assert [a.key for a in first] == [1, 2]
    assert [a.key for a in second] == [3]


def test_inputs_file_is_distinct_keys_the_tester_reads(tmp_path: Path) -> None:
    """write_inputs gives one `{"key": k}` per line, every key distinct, as load_inputs reads them."""
    path = tmp_path / "keys.jsonl"
    misspath.write_inputs(path, 1000)
    inputs = load_inputs(path)
    assert len(set(inputs)) == 1000
    assert inputs[0] == b'{"key":0}'


def test_model_calls_read_from_metrics() -> None:
    """The counter is read from a /metrics scrape, with or without labels."""
    text = "# HELP x\npredcache_model_calls_total 32.0\npredcache_model_calls_total_created 1.7e9\n"
    assert misspath.model_calls(text) == 32
    assert misspath.model_calls('predcache_model_calls_total{model="a"} 2.0\n') == 2


def test_report_and_target_from_a_section() -> None:
    """The Markdown table has a row per model; the batched run's ratio is checked against 1.25x."""
    row = {
        "requests": 1000, "errors": 0, "classes": {"MISS": 1000}, "p50_ms": 600.0, "p99_ms": 1100.0,
        "max_ms": 1150.0,
    }  # fmt: skip
    section = {
        "settings": {"keys": 1000, "concurrency": 200, "model_max_concurrency": 1, "max_batch_size": 32,
                     "batch_wait_ms": 2.0, "model_queue_max": 1000},
        "call_ms": 20.0, "item_ms": 0.5, "ideal_calls": 32, "ideal_wall_s": 1.152, "target_ratio": 1.25,
        "rows": [
            {**row, "variant": "unbatched", "label": "predict only", "model_calls": 1000,
             "items_per_call": 1.0, "wall_s": 20.6, "ratio_to_ideal": 17.88},
            {**row, "variant": "batched", "label": "predict_batch", "model_calls": 33,
             "items_per_call": 30.3, "wall_s": 1.3, "ratio_to_ideal": 1.128},
        ],
    }  # fmt: skip
    lines = report.miss_path(section)
    assert lines[2].startswith("| predict only | 1000 | 0 | 1000 | 1 | 20.600 | 17.88x")
    assert lines[3].startswith("| predict_batch | 1000 | 0 | 33 | 30.3 | 1.300 | 1.13x")
    found = {t.name: t for t in targets.evaluate({"miss_path": section})}
    assert found["miss_path_batched"].met is True
    skipped = {t.name: t for t in targets.evaluate({"miss_path": {"skipped": "no batching"}})}
    assert skipped["miss_path_batched"].met is None
    assert report.miss_path({**section, "skipped": "no batching"})[0].startswith("Skipped: no batching")
