"""Command line: `python -m loadtest [options]` runs a load test; `python -m loadtest compare A B` compares.

Exit status: 0 done, 1 every request failed, 2 usage error, 99 a `--fail-on` threshold failed.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

import orjson
from rich.console import Console

from . import report
from .compare import RunFileError, compare_runs, load_run
from .csvlog import CsvRequestLog
from .options import Parser, UsageError, build_parser, settings_from
from .plot import PLOT_MISSING, LatencyTimeline, draw_plot, plotting_available
from .runner import RequestObserver, RequestRecord, run_load
from .settings import RunSettings
from .stats import Recorder
from .summary import RunSummary, summarize
from .thresholds import Threshold, ThresholdError, evaluate, parse_threshold

EXIT_OK = 0
EXIT_ALL_FAILED = 1
EXIT_USAGE = 2
EXIT_THRESHOLD_FAILED = 99


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


def _check_output(flag: str, path: Path | None) -> None:
    if path is not None and not path.parent.is_dir():
        raise UsageError(f"{flag}: directory {str(path.parent)!r} does not exist")


def _load_test(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    settings = settings_from(args)
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
    return _verdict(summary, settings, thresholds, console)


def _verdict(
    summary: RunSummary, settings: RunSettings, thresholds: list[Threshold], console: Console
) -> int:
    results = [evaluate(threshold, summary) for threshold in thresholds]
    report.render_thresholds(results, console)
    if summary.requests and summary.errors == summary.requests:
        print(report.every_request_failed(summary.errors_by_kind, settings), file=sys.stderr)
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
    parser = Parser(prog="python -m loadtest compare", description="Compare two runs written with --json.")
    parser.add_argument("before", type=Path, help="the baseline run, e.g. without the cache")
    parser.add_argument("after", type=Path, help="the run to compare with it")
    args = parser.parse_args(argv)
    try:
        before, after = load_run(args.before), load_run(args.after)
    except RunFileError as exc:
        raise UsageError(str(exc)) from None
    report.render_comparison(compare_runs(before, after), report.make_console(sys.stdout))
    return EXIT_OK
