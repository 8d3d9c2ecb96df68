"""The command line end to end, against the servers in conftest: what a user sees and the exit status."""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from loadtest.cli import main
from loadtest.report import every_request_failed
from loadtest.settings import DEFAULT_URL, RunSettings

from .conftest import STALL_S, stalling_app


def _run_json(tmp_path: Path, *args: str) -> tuple[int, dict[str, Any]]:
    path = tmp_path / "run.json"
    status = main([*args, "--no-progress", "--json", str(path)])
    return status, json.loads(path.read_text())


# The cheap end-to-end tests run over both clients: raw, the default for http://, and aiohttp.
both_clients = pytest.mark.parametrize("client", ["raw", "aiohttp"])


def _latency(run: dict[str, Any], response_class: str | None = None) -> dict[str, float]:
    latency: dict[str, float] = (
        run["latency_ms"] if response_class is None else run["classes"][response_class]["latency_ms"]
    )
    return latency


@both_clients
def test_report_has_a_row_per_cache_class(
    server: str, client: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Requests spread over pairs are reported per class, with the hit ratio."""
    pairs = "HIT,HIT,MISS,COLLAPSED,STALE,NONE"
    status = main(
        [
            "--url",
            f"{server}/fast",
            "--pairs",
            pairs,
            "-n",
            "60",
            "-c",
            "3",
            "--no-progress",
            "--client",
            client,
        ]
    )
    out = capsys.readouterr().out
    assert status == 0
    for name in ("HIT", "MISS", "collapsed", "STALE", "none"):
        assert re.search(rf"│ {name}\s+│\s+10 │", out) or re.search(rf"│ {name}\s+│\s+20 │", out), name
    assert "Hit ratio     50.0% of 60 answered" in out
    assert "Status codes  200: 60" in out
    assert "tails may be understated" in out


def test_verbose_prints_one_line_per_request(server: str, capsys: pytest.CaptureFixture[str]) -> None:
    """--verbose prints `Time taken: 1.23ms  HIT` for every request, then the report."""
    status = main(
        ["--url", f"{server}/fast", "--pair", "HIT", "--n", "25", "--concurrency", "1", "--verbose"]
    )
    lines = capsys.readouterr().out.splitlines()
    taken = [line for line in lines if line.startswith("Time taken:")]
    assert status == 0
    assert len(taken) == 25
    assert all(re.fullmatch(r"Time taken: \d+\.\d\dms  HIT", line) for line in taken)
    assert any("Latency (ms)" in line for line in lines[25:])


def test_percentiles_match_the_servers_known_latencies(server: str, tmp_path: Path) -> None:
    """A server answering in 20 ms and 80 ms shows those latencies in its two classes' percentiles."""
    status, run = _run_json(
        tmp_path, "--url", f"{server}/slow", "--pairs", "FAST,SLOW", "-n", "40", "-c", "4"
    )
    assert status == 0
    for response_class, expected_ms in (("HIT", 20.0), ("MISS", 80.0)):
        latency = _latency(run, response_class)
        # At least the sleep; the bound above is generous for a loaded test machine.
        assert expected_ms <= latency["min"] <= latency["p50"] < expected_ms + 30
        assert latency["max"] < expected_ms + 200
    assert run["hit_ratio"] == 0.5


def test_json_has_the_documented_shape(server: str, tmp_path: Path) -> None:
    """--json holds the settings, counts, latencies overall and per class, and encoded histograms."""
    status, run = _run_json(
        tmp_path, "--url", f"{server}/fast", "--pairs", "HIT,MISS", "-n", "20", "--warmup", "5"
    )
    assert status == 0
    assert run["schema_version"] == 1
    assert {
        "requests",
        "errors",
        "throughput_rps",
        "hit_ratio",
        "latency_ms",
        "classes",
        "histograms",
    } <= set(run)
    assert run["requests"] == 20
    assert run["errors"] == 0
    assert set(_latency(run)) == {"min", "mean", "p50", "p90", "p95", "p99", "p999", "max"}
    assert run["classes"] == {
        name: {"count": 10, "latency_ms": _latency(run, name)} for name in ("HIT", "MISS")
    }
    settings = run["settings"]
    assert settings["concurrency"] == 10
    assert settings["warmup"] == 5
    histograms = run["histograms"]
    assert histograms["corrected"]["HIT"].startswith("HISTF")


def test_rate_holds_its_rate(server: str, tmp_path: Path) -> None:
    """--rate 200 for 200 requests takes about a second, whatever the concurrency."""
    status, run = _run_json(tmp_path, "--url", f"{server}/fast", "--rate", "200", "-n", "200", "-c", "8")
    assert status == 0
    assert run["requests"] == 200
    assert 160 <= run["throughput_rps"] <= 230
    assert run["late_starts"] < 100  # a loaded machine wakes some workers late; most must be on time


def test_duration_bounds_a_closed_loop_run(server: str, tmp_path: Path) -> None:
    """-z 300ms stops sending after 300 ms."""
    status, run = _run_json(tmp_path, "--url", f"{server}/fast", "-z", "300ms", "-c", "2")
    assert status == 0
    assert run["requests"] > 10
    assert 0.3 <= run["duration_s"] < 1.5


def test_stall_shows_in_corrected_but_not_uncorrected_p99(
    serve: Callable[[web.Application], str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A server freezing for 400 ms twice: the requests that were due meanwhile carry the stall in
    corrected p99, while the uncorrected p99 only sees the two requests caught inside the freeze."""
    url = serve(stalling_app())
    status, run = _run_json(tmp_path, "--url", f"{url}/stall", "--rate", "200", "-n", "400", "-c", "1")
    assert status == 0
    corrected_p99 = _latency(run)["p99"]
    uncorrected_p99 = run["uncorrected_latency_ms"]["p99"]
    assert corrected_p99 > STALL_S * 1000 / 2
    assert uncorrected_p99 < 100
    assert run["late_starts"] > 40
    out = capsys.readouterr().out
    assert "all, uncorrected" in out
    assert "started more than 1 ms after they were due" in out


@both_clients
def test_timeouts_are_errors(
    server: str, client: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A request past --timeout counts as a timeout error; when all fail the exit status is 1."""
    status, run = _run_json(
        tmp_path, "--url", f"{server}/hang", "-n", "3", "-c", "3", "--timeout", "200ms", "--client", client
    )
    assert status == 1
    assert run["errors_by_kind"] == {"timeout": 3}
    # aiohttp's timer runs on the event loop's millisecond clock and can fire up to 1 ms early.
    assert 199 <= _latency(run, "error")["min"] < 1000
    assert "every request failed (timeout: 3)" in capsys.readouterr().err


@both_clients
def test_connection_refused_is_a_connect_error(client: str, tmp_path: Path) -> None:
    """Nothing listening: every request is a `connect` error."""
    status, run = _run_json(
        tmp_path, "--url", "http://127.0.0.1:9/predict", "-n", "4", "-c", "2", "--client", client
    )
    assert status == 1
    assert run["errors_by_kind"] == {"connect": 4}


def test_when_every_request_fails_the_line_names_the_request_tried(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Nothing listening: the one line on stderr says which URL was tried; only the Makefile's default
    address gets the hint about PORT=."""
    status, _ = _run_json(tmp_path, "--url", "http://127.0.0.1:9/predict", "-n", "2", "--pair", "BTC-EUR")
    assert status == 1
    err = capsys.readouterr().err
    assert err == (
        "loadtest: every request failed (connect: 2); tried GET http://127.0.0.1:9/predict?pair=BTC-EUR\n"
    )
    inputs = tmp_path / "inputs.jsonl"
    inputs.write_text('{"pair": "ETH-EUR"}\n')
    status, _ = _run_json(tmp_path, "--url", "http://127.0.0.1:9/predict", "--inputs", str(inputs), "-n", "1")
    assert status == 1
    assert "; tried POST http://127.0.0.1:9/predict\n" in capsys.readouterr().err


def test_the_default_address_gets_the_port_hint() -> None:
    settings = RunSettings(url=DEFAULT_URL, pairs=("ETH-EUR", "BTC-EUR"), requests=100, concurrency=1)
    line = every_request_failed({"connect": 100}, settings)
    assert line.startswith(
        "loadtest: every request failed (connect: 100); tried GET "
        "http://127.0.0.1:8000/predict?pair=ETH-EUR (and 1 more pairs); nothing listens on port 8000"
    )
    assert "make requests PORT=8080" in line
    # A timeout is not a wrong port: no hint.
    assert "PORT=" not in every_request_failed({"timeout": 3}, settings)


def test_the_makefile_sends_to_the_default_url_with_its_default_port() -> None:
    """The PORT= hint is shown for DEFAULT_URL: that must be where `make requests` sends by default."""
    makefile = (Path(__file__).parents[2] / "Makefile").read_text()
    port = re.search(r"^PORT \?= (\d+)$", makefile, re.MULTILINE)
    assert port is not None
    requests = re.search(r"^requests:.*\n\t.*--url (\S+)", makefile, re.MULTILINE)
    assert requests is not None
    assert requests[1].replace("$(PORT)", port[1]) == DEFAULT_URL


@pytest.mark.parametrize(
    ("expressions", "expected_status"),
    [
        (["p99<10s", "HIT.p95<10000ms", "error_rate<1%", "hit_ratio>0.9"], 0),
        (["p50<1us"], 99),
        (["hit_ratio>=0.99", "MISS.count>0"], 99),
        (["STALE.p99<1s"], 99),
        (["p42<1ms"], 2),
        (["BOGUS.p99<1ms"], 2),
        (["p99<1parsec"], 2),
    ],
)
def test_fail_on_sets_the_exit_status(
    server: str, expressions: list[str], expected_status: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """Thresholds pass (0), fail (99, also for a class with no requests) or are usage errors (2)."""
    args = ["--url", f"{server}/fast", "--pair", "HIT", "-n", "20", "--no-progress"]
    status = main([*args, *(arg for expression in expressions for arg in ("--fail-on", expression))])
    captured = capsys.readouterr()
    assert status == expected_status
    if expected_status == 2:
        assert len(captured.err.splitlines()) == 1
        assert captured.err.startswith("loadtest: error: --fail-on")
    elif expected_status == 99:
        assert "FAIL" in captured.out
    else:
        assert captured.out.count("pass") == len(expressions)


@both_clients
def test_error_rate_threshold_catches_a_failing_server(
    server: str, client: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """HTTP 503s are errors by kind; the threshold reports FAIL and, as nothing succeeded, the exit is 1."""
    args = ["--url", f"{server}/fail", "-n", "10", "--no-progress", "--client", client]
    status = main([*args, "--fail-on", "error_rate<1%"])
    out = capsys.readouterr().out
    assert status == 1
    assert "10 (100.0%): HTTP 503: 10" in out
    assert "FAIL  error_rate<1%  (observed 100.00%)" in out


@pytest.mark.parametrize(
    "args",
    [
        ["--n", "0"],
        ["--concurrency", "many"],
        ["--duration", "5 parsecs"],
        ["--rate", "-3"],
        ["--timeout", "0"],
        ["--url", "ftp://example.com/x"],
        ["--url", "https://example.com/x", "--client", "raw"],
        ["--client", "curl"],
        ["--pairs", ","],
        ["--pair", "A", "--pairs", "B"],
        ["--bogus"],
        ["--fail-on", "p99<<3"],
        ["--json", "/nonexistent-dir/run.json"],
        ["compare", "only-one.json"],
        ["compare", "missing-a.json", "missing-b.json"],
    ],
)
def test_bad_flags_exit_2_with_one_line(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """A usage error is one line on stderr, no traceback, exit status 2, and nothing is sent."""
    status = main(args)
    captured = capsys.readouterr()
    assert status == 2
    assert captured.out == ""
    assert len(captured.err.splitlines()) == 1
    assert captured.err.startswith("loadtest: error: ")


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    """--help lists the flags and exits 0."""
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for flag in ("--rate", "--fail-on", "--json", "--csv", "--plot", "--warmup", "--client"):
        assert flag in out


def test_csv_has_one_row_per_request(server: str, tmp_path: Path) -> None:
    """--csv writes a header and one row per measured request (warm-up excluded)."""
    path = tmp_path / "requests.csv"
    status = main(
        ["--url", f"{server}/fast", "-n", "30", "--warmup", "3", "--no-progress", "--csv", str(path)]
    )
    with path.open(newline="") as file:
        rows = list(csv.DictReader(file))
    assert status == 0
    assert len(rows) == 30
    assert {row["class"] for row in rows} == {"HIT"}
    assert all(row["status"] == "200" and int(row["bytes"]) > 0 for row in rows)
    assert all(float(row["latency_ms"]) > 0 for row in rows)


def test_plot_writes_a_png(server: str, tmp_path: Path) -> None:
    """--plot draws a PNG (matplotlib is the optional `plot` extra)."""
    pytest.importorskip("matplotlib")
    path = tmp_path / "latency.png"
    status = main(
        ["--url", f"{server}/fast", "--pairs", "HIT,MISS", "-n", "50", "--no-progress", "--plot", str(path)]
    )
    assert status == 0
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
