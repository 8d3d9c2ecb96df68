"""The load test's command line flags: the parser, its value converters, and the RunSettings they make.

A bad flag or value raises UsageError, which the CLI reports as one line with exit status 2.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import NoReturn

import orjson
from yarl import URL

from .llm import PromptsError, load_prompts
from .settings import CLIENTS, DEFAULT_URL, RunSettings
from .workload import InputsError, load_inputs

DEFAULT_PAIR = "ETH-EUR"
_DURATION = re.compile(r"^\s*(?P<number>[0-9]*\.?[0-9]+)\s*(?P<unit>ms|s|m|h|)\s*$")
_DURATION_UNITS_S = {"ms": 0.001, "s": 1.0, "": 1.0, "m": 60.0, "h": 3600.0}


class UsageError(Exception):
    """A bad flag or value; reported as one line on stderr with exit status 2."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser that raises UsageError instead of printing usage and exiting."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def parse_duration_s(text: str) -> float:
    """Seconds from `30`, `30s`, `500ms`, `2m` or `1h`; raises ValueError otherwise."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"invalid duration {text!r} (use e.g. 30, 30s, 500ms, 2m)")
    seconds = float(match["number"]) * _DURATION_UNITS_S[match["unit"]]
    if seconds <= 0:
        raise ValueError(f"duration must be positive, got {text!r}")
    return seconds


def _duration_arg(text: str) -> float:
    try:
        return parse_duration_s(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _int_at_least(minimum: int) -> Callable[[str], int]:
    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return convert


_positive_int = _int_at_least(1)
_non_negative_int = _int_at_least(0)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="python -m loadtest",
        description="HTTP load tester with per-class (X-Cache HIT/MISS) latency percentiles and "
        "coordinated-omission correction. `python -m loadtest compare A.json B.json` compares two runs.",
    )
    parser.add_argument("--url", default=DEFAULT_URL, help="target URL (default: %(default)s)")
    pair = parser.add_mutually_exclusive_group()
    pair.add_argument(
        "--pair",
        help=f"value of the pair query parameter (default: {DEFAULT_PAIR}); with --batch, "
        "a batch of this one input",
    )
    pair.add_argument("--pairs", help="comma-separated pairs to spread requests over, e.g. ETH-EUR,BTC-EUR")
    pair.add_argument(
        "--inputs",
        type=Path,
        metavar="FILE.jsonl",
        help="one JSON object input per line, each request a POST of one line to --url; lines in turn "
        "(-n equal to the line count sends each once) unless --zipf",
    )
    pair.add_argument(
        "--prompts",
        type=Path,
        metavar="FILE.jsonl",
        help="LLM mode: one chat completion per line, a prompt string or a whole request body, each "
        "POSTed to --url (e.g. http://HOST:PORT/v1/chat/completions); reports TTFT, inter-token "
        "latency and output tokens/s per class",
    )
    parser.add_argument(
        "--stream", action="store_true", help="LLM mode: ask for server-sent events (stream: true)"
    )
    parser.add_argument(
        "--model",
        default="default",
        help="LLM mode: the model of the bodies made from prompt strings (default: %(default)s)",
    )
    parser.add_argument(
        "--max-tokens",
        type=_positive_int,
        metavar="N",
        help="LLM mode: max_tokens of every request that sets none of its own",
    )
    parser.add_argument(
        "--api-key",
        metavar="KEY",
        help="LLM mode: sent as Authorization: Bearer KEY (default: $OPENAI_API_KEY, if set)",
    )
    parser.add_argument(
        "--zipf",
        type=_positive_float,
        metavar="S",
        help="draw --inputs (or --prompts) lines at random by Zipf rank (line 1 most popular) with "
        "exponent S",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the --zipf draws (default: %(default)s)")
    parser.add_argument(
        "--batch",
        type=_positive_int,
        metavar="N",
        help='POST N inputs per request to --url + /batch ({"inputs": [...]}); each item is '
        "counted with the request's latency and its own cache class",
    )
    parser.add_argument(
        "-n", "--n", type=_positive_int, default=100, help="requests to send (default: %(default)s)"
    )
    parser.add_argument(
        "-c",
        "--concurrency",
        type=_positive_int,
        default=10,
        help="connections in flight (default: %(default)s)",
    )
    parser.add_argument(
        "-z", "--duration", type=_duration_arg, help="run for this long instead of -n: 30, 30s, 2m"
    )
    parser.add_argument(
        "-q",
        "--rate",
        type=_positive_float,
        help="open loop: total requests per second, latency measured from due time",
    )
    parser.add_argument(
        "--timeout",
        type=_duration_arg,
        default=10.0,
        help="per-request timeout, counted as an error (default: 10s)",
    )
    parser.add_argument(
        "--warmup",
        type=_non_negative_int,
        default=0,
        metavar="N",
        help="requests sent first and left out of the figures",
    )
    parser.add_argument(
        "--client",
        choices=CLIENTS,
        default="auto",
        help="raw: the built-in HTTP/1.1 client (http:// only); aiohttp: slower, for comparison; "
        "auto: raw for http://, aiohttp for https:// (default: %(default)s)",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="write the run as JSON")
    parser.add_argument("--csv", type=Path, metavar="PATH", help="write one row per request")
    parser.add_argument(
        "--fail-on",
        action="append",
        default=[],
        metavar="EXPR",
        help="exit 99 unless EXPR holds, e.g. p99<200ms, HIT.p95<5ms, error_rate<1%%, hit_ratio>0.9",
    )
    parser.add_argument("--verbose", action="store_true", help="print one 'Time taken' line per request")
    parser.add_argument("--no-progress", action="store_true", help="no live progress bar")
    parser.add_argument(
        "--plot", type=Path, metavar="PATH.png", help="draw latency over time (needs the plot extra)"
    )
    return parser


def settings_from(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> RunSettings:
    environ = os.environ if environ is None else environ
    url = URL(args.url)
    if url.scheme not in ("http", "https") or not url.host:
        raise UsageError(f"--url must be an http:// or https:// URL with a host, got {args.url!r}")
    if args.client == "raw" and url.scheme != "http":
        raise UsageError(f"--client raw speaks plain http:// only, got {args.url!r}; use --client aiohttp")
    raw_pairs = args.pairs.split(",") if args.pairs is not None else [args.pair or DEFAULT_PAIR]
    pairs = tuple(p.strip() for p in raw_pairs if p.strip())
    if not pairs:
        raise UsageError("--pairs must name at least one pair")
    inputs: tuple[bytes, ...] = ()
    inputs_source: str | None = None
    prompts_source: str | None = None
    if args.prompts is None:
        for flag, given in (("--stream", args.stream), ("--max-tokens", args.max_tokens is not None)):
            if given:
                raise UsageError(f"{flag} is for LLM mode: give --prompts FILE.jsonl")
    if args.prompts is not None:
        if args.batch is not None:
            raise UsageError("--batch does not apply to --prompts (one chat completion per request)")
        if args.client == "raw":
            raise UsageError(
                "--prompts reads answers as they arrive, with the aiohttp client: drop --client raw"
            )
        try:
            inputs = load_prompts(
                args.prompts, model=args.model, stream=args.stream, max_tokens=args.max_tokens
            )
        except PromptsError as exc:
            raise UsageError(str(exc)) from None
        prompts_source, pairs = str(args.prompts), ()
    elif args.inputs is not None:
        try:
            inputs = load_inputs(args.inputs)
        except InputsError as exc:
            raise UsageError(str(exc)) from None
        inputs_source, pairs = str(args.inputs), ()
    elif args.zipf is not None:
        raise UsageError("--zipf draws --inputs or --prompts lines: give one of them")
    elif args.batch is not None:
        if args.pair is None:
            raise UsageError("--batch needs --inputs FILE.jsonl, or --pair PAIR for batches of that input")
        inputs = (orjson.dumps({"pair": pairs[0]}),)
    return RunSettings(
        url=args.url,
        pairs=pairs,
        requests=args.n,
        concurrency=args.concurrency,
        duration_s=args.duration,
        rate=args.rate,
        timeout_s=args.timeout,
        warmup=args.warmup,
        client=args.client,
        inputs=inputs,
        inputs_source=inputs_source,
        zipf_s=args.zipf,
        seed=args.seed,
        batch_size=args.batch,
        prompts_source=prompts_source,
        stream=args.stream,
        api_key=args.api_key if args.api_key is not None else environ.get("OPENAI_API_KEY") or None,
    )
