"""`--inputs`, `--zipf` and `--batch` end to end against the fake servers in conftest: what is sent,
how items are classified and counted, and the usage errors."""

from __future__ import annotations

import csv
import json
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from loadtest.cli import main

from .conftest import caching_app

both_clients = pytest.mark.parametrize("client", ["raw", "aiohttp"])


def _jsonl(tmp_path: Path, inputs: list[dict[str, Any]], name: str = "inputs.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("".join(json.dumps(item) + "\n" for item in inputs))
    return path


def _run(tmp_path: Path, *args: str) -> tuple[int, dict[str, Any]]:
    path = tmp_path / "run.json"
    status = main([*args, "--no-progress", "--json", str(path)])
    return status, json.loads(path.read_text())


def _counts(run: dict[str, Any]) -> dict[str, int]:
    return {name: entry["count"] for name, entry in run["classes"].items()}


@both_clients
def test_inputs_post_each_line_as_json(
    predict_server: tuple[str, list[Any]], client: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each request POSTs one line, as JSON, to --url; -n equal to the line count sends every line once,
    and the classes come from the answers' headers as for GET."""
    url, received = predict_server
    lines = [{"pair": p, "n": i} for i, p in enumerate(["HIT", "HIT", "MISS", "COLLAPSED", "STALE", "NONE"])]
    inputs = _jsonl(tmp_path, lines)
    status, run = _run(
        tmp_path, "--url", f"{url}/predict", "--inputs", str(inputs), "-n", "6", "-c", "2", "--client", client
    )
    assert status == 0
    assert sorted(received, key=lambda body: body["n"]) == lines
    assert _counts(run) == {"HIT": 2, "STALE": 1, "MISS": 1, "collapsed": 1, "none": 1}
    assert run["requests"] == run["http_requests"] == 6
    assert run["settings"]["inputs"] == str(inputs)
    assert run["settings"]["input_lines"] == 6
    assert f"inputs {inputs} (6 lines)" in capsys.readouterr().out


@both_clients
def test_batch_counts_each_item_with_its_own_class(
    predict_server: tuple[str, list[Any]], client: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--batch 4 POSTs {"inputs": [4 lines]} to --url + /batch; every item is counted in its own class
    (404 and 503 items as errors), with the batch's latency, and requests counts items."""
    url, received = predict_server
    inputs = _jsonl(
        tmp_path,
        [{"pair": p} for p in ["HIT", "COLLAPSED", "MISS", "UNKNOWN", "STALE", "BROKEN", "HIT", "HIT"]],
    )
    status, run = _run(
        tmp_path, "--url", f"{url}/predict", "--inputs", str(inputs), "--batch", "4", "-n", "10", "-c", "3",
        "--client", client,
    )  # fmt: skip
    out = capsys.readouterr().out
    assert status == 0
    assert len(received) == 10
    assert all(len(body["inputs"]) == 4 for body in received)
    # 10 batches of 4 = 40 items, the 8 lines 5 times each.
    assert Counter(item["pair"] for body in received for item in body["inputs"])["HIT"] == 15
    assert _counts(run) == {"HIT": 15, "STALE": 5, "MISS": 5, "collapsed": 5, "error": 10}
    assert run["requests"] == 40
    assert run["http_requests"] == 10
    assert run["errors_by_kind"] == {"HTTP 404": 5, "HTTP 503": 5}
    assert run["status_codes"] == {"200": 30, "404": 5, "503": 5}
    assert run["hit_ratio"] == pytest.approx(20 / 30, abs=1e-6)
    assert run["settings"]["batch"] == 4
    assert "40 items in 10 batch requests of 4" in out
    assert "batch 4" in out.splitlines()[0]


def test_batch_items_share_their_requests_latency(
    predict_server: tuple[str, list[Any]], tmp_path: Path
) -> None:
    """--csv writes one row per item; a batch's items carry the same start and latency."""
    url, _ = predict_server
    inputs = _jsonl(tmp_path, [{"pair": "HIT"}, {"pair": "MISS"}, {"pair": "UNKNOWN"}])
    path = tmp_path / "items.csv"
    status = main(
        ["--url", f"{url}/predict", "--inputs", str(inputs), "--batch", "3", "-n", "5", "-c", "1",
         "--no-progress", "--csv", str(path)]
    )  # fmt: skip
    with path.open(newline="") as file:
        rows = list(csv.DictReader(file))
    assert status == 0
    assert len(rows) == 15
    for batch in (rows[i : i + 3] for i in range(0, 15, 3)):
        assert [row["class"] for row in batch] == ["HIT", "MISS", "error"]
        assert [row["error"] for row in batch] == ["", "", "HTTP 404"]
        assert len({(row["actual_start_ms"], row["latency_ms"]) for row in batch}) == 1
        assert int(batch[0]["bytes"]) > 0
        assert batch[1]["bytes"] == batch[2]["bytes"] == "0"


@both_clients
def test_a_refused_batch_fails_every_item(
    predict_server: tuple[str, list[Any]], client: str, tmp_path: Path
) -> None:
    """A batch answered 400 (an invalid item) counts all its items as errors of kind HTTP 400."""
    url, _ = predict_server
    inputs = _jsonl(tmp_path, [{"pair": "HIT"}, {"pair": "INVALID"}])
    status, run = _run(
        tmp_path, "--url", f"{url}/predict", "--inputs", str(inputs), "--batch", "2", "-n", "3",
        "--client", client,
    )  # fmt: skip
    assert status == 1
    assert run["requests"] == 6
    assert run["http_requests"] == 3
    assert run["errors_by_kind"] == {"HTTP 400": 6}


def test_batch_with_a_pair_repeats_that_input(predict_server: tuple[str, list[Any]], tmp_path: Path) -> None:
    """Without --inputs, --batch N --pair P sends batches of N copies of {"pair": P}."""
    url, received = predict_server
    status, run = _run(tmp_path, "--url", f"{url}/predict", "--pair", "STALE", "--batch", "5", "-n", "2")
    assert status == 0
    assert received == [{"inputs": [{"pair": "STALE"}] * 5}] * 2
    assert _counts(run) == {"STALE": 10}


def test_batch_url_already_ending_in_batch_is_kept(
    predict_server: tuple[str, list[Any]], tmp_path: Path
) -> None:
    """--url .../predict/batch is used as it is, not extended again."""
    url, received = predict_server
    status, run = _run(tmp_path, "--url", f"{url}/predict/batch", "--pair", "HIT", "--batch", "2", "-n", "1")
    assert status == 0
    assert _counts(run) == {"HIT": 2}
    assert received == [{"inputs": [{"pair": "HIT"}] * 2}]


def test_thresholds_apply_to_items_and_batch_requests(
    predict_server: tuple[str, list[Any]], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """--fail-on reads item figures (classes, hit ratio, error rate) and http_requests counts batches."""
    url, _ = predict_server
    inputs = _jsonl(tmp_path, [{"pair": "HIT"}, {"pair": "HIT"}, {"pair": "MISS"}, {"pair": "UNKNOWN"}])
    args = ["--url", f"{url}/predict", "--inputs", str(inputs), "--batch", "4", "-n", "5", "--no-progress"]
    passing = ["HIT.count>=10", "MISS.count<6", "http_requests<=5", "requests>=20", "hit_ratio>0.6"]
    assert main([*args, *(a for e in passing for a in ("--fail-on", e))]) == 0
    assert capsys.readouterr().out.count("pass") == len(passing)
    assert main([*args, "--fail-on", "error_rate<10%"]) == 99
    assert "FAIL  error_rate<10%  (observed 25.00%)" in capsys.readouterr().out


def test_zipf_hit_ratio_follows_key_popularity(
    serve: Callable[[web.Application], str], tmp_path: Path
) -> None:
    """Against a cache (first request for an input a MISS, later ones HITs): 1000 inputs sent in turn
    never hit, while Zipf draws hit as often as popular keys repeat, more so for a steeper exponent;
    the same seed gives the same figures."""
    inputs = _jsonl(tmp_path, [{"key": k} for k in range(1000)])

    def hit_ratio(*extra: str) -> float:
        url = serve(caching_app())
        status, run = _run(tmp_path, "--url", f"{url}/predict", "--inputs", str(inputs), "-n", "1000", *extra)
        assert status == 0
        assert run["requests"] == 1000
        ratio: float = run["hit_ratio"]
        return ratio

    assert hit_ratio() == 0.0
    gentle = hit_ratio("--zipf", "0.8", "--seed", "3")
    steep = hit_ratio("--zipf", "1.3", "--seed", "3")
    assert 0.2 < gentle < steep < 0.95
    assert hit_ratio("--zipf", "1.3", "--seed", "3") == steep
    assert hit_ratio("--zipf", "1.3", "--seed", "4") != steep


@both_clients
def test_zipf_batches_draw_each_item(
    serve: Callable[[web.Application], str], client: str, tmp_path: Path
) -> None:
    """With --batch and --zipf each item is its own draw: a steep law repeats the top input within
    and across batches."""
    inputs = _jsonl(tmp_path, [{"key": k} for k in range(200)])
    url = serve(caching_app())
    status, run = _run(
        tmp_path, "--url", f"{url}/predict", "--inputs", str(inputs), "--zipf", "2", "--batch", "10",
        "-n", "20", "--client", client,
    )  # fmt: skip
    assert status == 0
    assert run["requests"] == 200
    assert run["http_requests"] == 20
    assert run["hit_ratio"] > 0.5


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--inputs", "{missing}"], "--inputs: cannot read"),
        (["--inputs", "{not_object}"], "line 2: not a JSON object"),
        (["--inputs", "{not_json}"], "line 1: not JSON"),
        (["--inputs", "{empty}"], "holds no inputs"),
        (["--inputs", "{good}", "--batch", "0"], "--batch: must be at least 1"),
        (["--inputs", "{good}", "--zipf", "0"], "--zipf: must be a positive number"),
        (["--inputs", "{good}", "--zipf", "-1.5"], "--zipf: must be a positive number"),
        (["--inputs", "{good}", "--zipf", "nan"], "--zipf: must be a positive number"),
        (["--batch", "8"], "--batch needs --inputs"),
        (["--pairs", "A,B", "--batch", "8"], "--batch needs --inputs"),
        (["--zipf", "1.1"], "--zipf draws --inputs or --prompts lines"),
        (["--inputs", "{good}", "--pairs", "A,B"], "not allowed with argument"),
        (["--inputs", "{good}", "--seed", "x"], "--seed: invalid int value"),
    ],
)
def test_bad_workload_flags_exit_2_with_one_line(
    tmp_path: Path, args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unreadable or malformed inputs file, N < 1, S <= 0, --batch without inputs: one line, exit 2."""
    files = {
        "missing": tmp_path / "missing.jsonl",
        "not_object": tmp_path / "list.jsonl",
        "not_json": tmp_path / "broken.jsonl",
        "empty": tmp_path / "empty.jsonl",
        "good": tmp_path / "good.jsonl",
    }
    files["not_object"].write_text('{"pair": "A"}\n["B"]\n')
    files["not_json"].write_text("{pair: A}\n")
    files["empty"].write_text("\n")
    files["good"].write_text('{"pair": "A"}\n')
    argv = [arg.format(**{name: str(path) for name, path in files.items()}) for arg in args]
    status = main(["--url", "http://127.0.0.1:9/predict", *argv])
    captured = capsys.readouterr()
    assert status == 2
    assert captured.out == ""
    assert len(captured.err.splitlines()) == 1
    assert re.match(r"loadtest: error: ", captured.err)
    assert message in captured.err


def test_help_lists_the_workload_flags(capsys: pytest.CaptureFixture[str]) -> None:
    """--help documents --inputs, --zipf, --seed and --batch."""
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for flag in ("--inputs", "--zipf", "--seed", "--batch"):
        assert flag in out
