"""Command line: `python -m loadtest [options]` runs a load test; `python -m loadtest compare A B` compares.

Exit status: 0 done, 1 every request failed, 2 usage error, 99 a `--fail-on` threshold failed.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import NoReturn, TextIO

import orjson
from rich.console import Console
from yarl import URL

from . import report
from .compare import RunFileError, compare_runs, load_run
from .csvlog import CsvRequestLog
from .plot import PLOT_MISSING, LatencyTimeline, draw_plot, plotting_available
from .runner import CLIENTS, RequestObserver, RequestRecord, RunSettings, run_load
from .stats import Recorder, RunSummary, summarize
from .thresholds import Threshold, ThresholdError, evaluate, parse_threshold
from .workload import InputsError, load_inputs

EXIT_OK = 0
EXIT_ALL_FAILED = 1
EXIT_USAGE = 2
EXIT_THRESHOLD_FAILED = 99

DEFAULT_PAIR = "ETH-EUR"
_DURATION = re.compile(r"^\s*(?P<number>[0-9]*\.?[0-9]+)\s*(?P<unit>ms|s|m|h|)\s*$")
_DURATION_UNITS_S = {"ms": 0.001, "s": 1.0, "": 1.0, "m": 60.0, "h": 3600.0}


class UsageError(Exception):
    """A bad flag or value; reported as one line on stderr with exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if args[:1] == ["compare"]:
            return _compare(args[1:])
        return _load_test(args)
    except UsageError as exc:
        print(f"loadtest: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else EXIT_OK


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
    parser = _Parser(
        prog="python -m loadtest",
        description="HTTP load tester with per-class (X-Cache HIT/MISS) latency percentiles and "
        "coordinated-omission correction. `python -m loadtest compare A.json B.json` compares two runs.",
    )
    parser.add_argument(
        "--url", default="http://127.0.0.1:8000/predict", help="target URL (default: %(default)s)"
    )
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
    parser.add_argument(
        "--zipf",
        type=_positive_float,
        metavar="S",
        help="draw --inputs lines at random by Zipf rank (line 1 most popular) with exponent S",
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


def _settings_from(args: argparse.Namespace) -> RunSettings:
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
    if args.inputs is not None:
        try:
            inputs = load_inputs(args.inputs)
        except InputsError as exc:
            raise UsageError(str(exc)) from None
        inputs_source, pairs = str(args.inputs), ()
    elif args.zipf is not None:
        raise UsageError("--zipf draws --inputs lines: give --inputs FILE.jsonl")
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
    )


def _check_output(flag: str, path: Path | None) -> None:
    if path is not None and not path.parent.is_dir():
        raise UsageError(f"{flag}: directory {str(path.parent)!r} does not exist")


def _load_test(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    settings = _settings_from(args)
    try:
        thresholds = [parse_threshold(expression) for expression in args.fail_on]
    except ThresholdError as exc:
        raise UsageError(str(exc)) from None
    for flag, path in (("--json", args.json), ("--csv", args.csv), ("--plot", args.plot)):
        _check_output(flag, path)
    if args.plot is not None and not plotting_available():
        raise UsageError(PLOT_MISSING)

    stdout = sys.stdout
    console = report.make_console(stdout)
    observers: list[RequestObserver] = []
    if args.verbose:
        write = stdout.write

        def print_line(record: RequestRecord) -> None:
            write(report.verbose_line(record) + "\n")

        observers.append(print_line)
    timeline = LatencyTimeline() if args.plot is not None else None
    if timeline is not None:
        observers.append(timeline)
    csv_file: TextIO | None = (
        args.csv.open("w", newline="", encoding="utf-8") if args.csv is not None else None
    )
    csv_log = CsvRequestLog(csv_file) if csv_file is not None else None
    if csv_log is not None:
        observers.append(csv_log)

    recorder = Recorder()
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    show_progress = stdout.isatty() and not args.no_progress and not args.verbose
    try:
        duration_s = _run_async(_execute(settings, recorder, _fan_out(observers), show_progress, console))
    finally:
        if csv_log is not None and csv_file is not None:
            csv_log.flush()
            csv_file.close()

    summary = summarize(
        recorder,
        settings.as_dict(),
        started_at=started_at,
        duration_s=duration_s,
        open_loop=settings.open_loop,
    )
    report.render_run(summary, console)
    if args.json is not None:
        args.json.write_bytes(orjson.dumps(summary.to_json(), option=orjson.OPT_INDENT_2) + b"\n")
    if args.plot is not None and timeline is not None:
        draw_plot(summary, timeline, args.plot)
    return _verdict(summary, thresholds, console)


def _verdict(summary: RunSummary, thresholds: list[Threshold], console: Console) -> int:
    results = [evaluate(threshold, summary) for threshold in thresholds]
    report.render_thresholds(results, console)
    if summary.requests and summary.errors == summary.requests:
        kinds = ", ".join(f"{kind}: {count}" for kind, count in summary.errors_by_kind.items())
        print(f"loadtest: every request failed ({kinds})", file=sys.stderr)
        return EXIT_ALL_FAILED
    if not all(result.passed for result in results):
        return EXIT_THRESHOLD_FAILED
    return EXIT_OK


def _fan_out(observers: list[RequestObserver]) -> RequestObserver | None:
    if not observers:
        return None
    if len(observers) == 1:
        return observers[0]

    def observe_all(record: RequestRecord) -> None:
        for observer in observers:
            observer(record)

    return observe_all


async def _execute(
    settings: RunSettings,
    recorder: Recorder,
    observer: RequestObserver | None,
    show_progress: bool,
    console: Console,
) -> float:
    """Run the load, with a live progress bar refreshed from the recorder's count when asked."""
    if not show_progress:
        return await run_load(settings, recorder, observer=observer)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    planned = settings.planned_requests
    loop = asyncio.get_running_loop()
    with Progress(
        TextColumn("[bold]loadtest"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, transient=True,
    ) as progress:  # fmt: skip
        bar = progress.add_task("requests", total=planned if planned is not None else settings.duration_s)
        started = loop.time()
        task = asyncio.ensure_future(run_load(settings, recorder, observer=observer))
        while not task.done():
            await asyncio.wait({task}, timeout=0.1)
            done = (
                recorder.completed
                if planned is not None
                else min(loop.time() - started, settings.duration_s or 0)
            )
            progress.update(bar, completed=done)
        return task.result()


def _run_async(coroutine: Coroutine[object, object, float]) -> float:
    runner: Callable[[Coroutine[object, object, float]], float]
    try:
        import uvloop
    except ImportError:  # uvloop is not built for every platform
        runner = asyncio.run
    else:
        runner = uvloop.run
    return runner(coroutine)


def _compare(argv: list[str]) -> int:
    parser = _Parser(prog="python -m loadtest compare", description="Compare two runs written with --json.")
    parser.add_argument("before", type=Path, help="the baseline run, e.g. without the cache")
    parser.add_argument("after", type=Path, help="the run to compare with it")
    args = parser.parse_args(argv)
    try:
        before, after = load_run(args.before), load_run(args.after)
    except RunFileError as exc:
        raise UsageError(str(exc)) from None
    report.render_comparison(compare_runs(before, after), report.make_console(sys.stdout))
    return EXIT_OK
