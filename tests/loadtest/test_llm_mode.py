"""LLM mode end to end against a scripted OpenAI-style server with a cache's classes: what a user sees
(TTFT, inter-token latency, tokens per class), the JSON, thresholds on them and compare."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from loadtest.cli import main
from loadtest.thresholds import ThresholdError, parse_threshold

TOKENS = ("Hello", ",", " world", "!", " Bye")
TOKEN_GAP_S = 0.02  # a miss's tokens come this far apart, the first one this long after the request
USAGE = {"prompt_tokens": 4, "completion_tokens": len(TOKENS), "total_tokens": 4 + len(TOKENS)}


def _chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    return b"data: " + json.dumps({"object": "chat.completion.chunk", "choices": [choice]}).encode() + b"\n\n"


def chat_app(*, cut: bool = False) -> web.Application:
    """POST /v1/chat/completions like predcache in front of an LLM: a prompt's first request is a MISS
    whose tokens come TOKEN_GAP_S apart, each later one a HIT with every token at once. `cut`: streams
    stop before their end."""
    seen: set[str] = set()

    async def completions(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if request.headers.get("Authorization") != "Bearer sk-test":
            return web.json_response({"error": {"message": "no key"}}, status=401)
        prompt = json.dumps(body["messages"])
        hit = prompt in seen
        seen.add(prompt)
        headers = {"X-Cache": "HIT" if hit else "MISS"}
        if not body.get("stream"):
            if not hit:
                await asyncio.sleep(TOKEN_GAP_S * len(TOKENS))
            message = {"role": "assistant", "content": "".join(TOKENS)}
            answer = {"choices": [{"index": 0, "message": message, "finish_reason": "stop"}], "usage": USAGE}
            return web.json_response(answer, headers=headers)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", **headers})
        await response.prepare(request)
        await response.write(_chunk({"role": "assistant"}))
        for token in TOKENS:
            if not hit:
                await asyncio.sleep(TOKEN_GAP_S)
            await response.write(_chunk({"content": token}))
            if cut:
                return response
        await response.write(_chunk({}, "stop"))
        if body.get("stream_options", {}).get("include_usage"):
            await response.write(b"data: " + json.dumps({"choices": [], "usage": USAGE}).encode() + b"\n\n")
        await response.write(b"data: [DONE]\n\n")
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", completions)
    return app


@pytest.fixture
def prompts(tmp_path: Path) -> Path:
    path = tmp_path / "prompts.jsonl"
    path.write_text('"What is 2+2?"\n"Name a colour."\n')
    return path


def _run(tmp_path: Path, url: str, prompts: Path, *args: str) -> tuple[int, dict[str, Any]]:
    out = tmp_path / "run.json"
    target = ["--url", f"{url}/v1/chat/completions", "--prompts", str(prompts), "--api-key", "sk-test"]
    status = main([*target, "-n", "20", "-c", "2", "--no-progress", "--json", str(out), *args])
    return status, json.loads(out.read_text())


def test_streamed_run_reports_ttft_itl_and_tokens_per_class(
    serve: Callable[[web.Application], str], prompts: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, run = _run(tmp_path, serve(chat_app()), prompts, "--stream")
    assert status == 0
    assert run["settings"]["stream"] is True
    assert {name: c["count"] for name, c in run["classes"].items()} == {"HIT": 18, "MISS": 2}
    miss, hit = run["classes"]["MISS"], run["classes"]["HIT"]
    # A miss's first token comes one gap in, and the next ones a gap apart; a hit has them all at once.
    assert TOKEN_GAP_S * 1000 <= miss["ttft_ms"]["p50"] < TOKEN_GAP_S * 1000 * 3
    assert TOKEN_GAP_S * 1000 * 0.8 <= miss["itl_ms"]["p50"] < TOKEN_GAP_S * 1000 * 3
    assert miss["itl_ms"]["count"] == 2 * (len(TOKENS) - 1)
    assert hit["ttft_ms"]["p50"] < miss["ttft_ms"]["p50"] / 2
    assert miss["e2e_ms"]["p50"] >= TOKEN_GAP_S * 1000 * len(TOKENS)
    assert (hit["output_tokens"], miss["output_tokens"], run["output_tokens"]) == (90, 10, 100)
    assert run["output_tokens_per_s"] == pytest.approx(100 / run["duration_s"], rel=0.01)
    report = capsys.readouterr().out
    assert "TTFT p50" in report
    assert "output tokens" in report


def test_a_json_run_has_every_token_at_the_end(
    serve: Callable[[web.Application], str], prompts: Path, tmp_path: Path
) -> None:
    status, run = _run(tmp_path, serve(chat_app()), prompts)
    assert status == 0
    miss = run["classes"]["MISS"]
    assert miss["ttft_ms"]["p50"] == pytest.approx(miss["e2e_ms"]["p50"], rel=0.2)
    assert miss["itl_ms"]["count"] == 0
    assert run["output_tokens"] == 20 * len(TOKENS)  # from usage


def test_fail_on_ttft_sets_the_exit_status(
    serve: Callable[[web.Application], str], prompts: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = serve(chat_app())
    passing, _ = _run(tmp_path, url, prompts, "--stream", "--fail-on", "HIT.ttft_ms.p99<500ms")
    assert passing == 0
    failing, _ = _run(tmp_path, url, prompts, "--stream", "--fail-on", "MISS.ttft_ms.p50<1ms")
    assert failing == 99
    output = capsys.readouterr().out
    assert "pass  HIT.ttft_ms.p99<500ms" in output
    assert "FAIL  MISS.ttft_ms.p50<1ms" in output


def test_a_stream_cut_before_its_end_is_an_error(
    serve: Callable[[web.Application], str], prompts: Path, tmp_path: Path
) -> None:
    status, run = _run(tmp_path, serve(chat_app(cut=True)), prompts, "--stream")
    assert status == 1  # every request failed
    assert run["errors_by_kind"] == {"incomplete stream": 20}
    assert "ttft_ms" not in run


def test_a_refused_key_is_an_http_error(
    serve: Callable[[web.Application], str], prompts: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run.json"
    url = serve(chat_app())
    args = ["--url", f"{url}/v1/chat/completions", "--prompts", str(prompts), "-n", "4", "--no-progress"]
    assert main([*args, "--api-key", "wrong", "--json", str(out)]) == 1
    assert json.loads(out.read_text())["errors_by_kind"] == {"HTTP 401": 4}


def test_compare_lines_up_ttft_and_itl(
    serve: Callable[[web.Application], str],
    prompts: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = serve(chat_app())
    before, after = tmp_path / "before", tmp_path / "after"
    before.mkdir()
    after.mkdir()
    _run(before, url, prompts, "--stream")
    _run(after, url, prompts, "--stream")
    capsys.readouterr()
    assert main(["compare", str(before / "run.json"), str(after / "run.json")]) == 0
    output = capsys.readouterr().out
    assert "ttft p99" in output
    assert "itl p50" in output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--stream"], "--stream is for LLM mode"),
        (["--prompts", "PROMPTS", "--batch", "2"], "--batch does not apply to --prompts"),
        (["--prompts", "PROMPTS", "--client", "raw"], "drop --client raw"),
        (["--prompts", "missing.jsonl"], "--prompts: cannot read"),
    ],
)
def test_bad_llm_flags_exit_2_with_one_line(
    args: list[str], message: str, prompts: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([arg.replace("PROMPTS", str(prompts)) for arg in args]) == 2
    error = capsys.readouterr().err
    assert message in error
    assert error.count("\n") == 1


def test_token_thresholds_parse_and_bad_ones_are_named() -> None:
    threshold = parse_threshold("HIT.ttft_ms.p99<5ms")
    assert (threshold.response_class, threshold.token_latency, threshold.metric, threshold.limit) == (
        "HIT",
        "ttft_ms",
        "p99",
        5.0,
    )
    assert parse_threshold("itl_ms.p99.9<0.1s").metric == "p999"
    assert parse_threshold("output_tokens_per_s>100").limit == 100
    for bad, reason in [
        ("HIT.ttft_ms<5ms", "ttft_ms needs one of"),
        ("WARM.ttft_ms.p99<5ms", "unknown class"),
        ("output_tokens_per_s.p99>1", "takes no percentile"),
        ("ttft_ms.p99<5parsecs", "unknown latency unit"),
    ]:
        with pytest.raises(ThresholdError, match=reason):
            parse_threshold(bad)
