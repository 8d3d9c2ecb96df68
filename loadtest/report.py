"""Formatting only: the terminal report, the `--verbose` line, threshold results and comparisons."""

from __future__ import annotations

from typing import TextIO

from rich.console import Console
from rich.table import Table
from rich.text import Text
from yarl import URL

from .classes import CLASSES
from .compare import ComparedFigure, Comparison
from .runner import LATE_START_TOLERANCE_S, RequestRecord
from .settings import DEFAULT_URL, RunSettings
from .stats import LatencySummary, decode_histogram, log_buckets
from .summary import RunSummary
from .thresholds import ThresholdResult

_HISTOGRAM_WIDTH = 40
_LATENCY_COLUMNS: tuple[tuple[str, str], ...] = (
    ("min", "min"),
    ("mean", "mean"),
    ("p50", "p50"),
    ("p90", "p90"),
    ("p95", "p95"),
    ("p99", "p99"),
    ("p99.9", "p999"),
    ("max", "max"),
)


def make_console(file: TextIO) -> Console:
    """A console for `file`; off a terminal it is wide enough that tables never wrap."""
    if file.isatty():
        return Console(file=file, highlight=False)
    return Console(file=file, width=120, highlight=False, no_color=True)


def format_ms(value: float) -> str:
    if value < 1:
        return f"{value:.3f}"
    if value < 100:
        return f"{value:.2f}"
    return f"{value:.1f}"


def format_ratio(ratio: float) -> str:
    if ratio >= 100:
        return f"{ratio:.0f}x"
    if ratio >= 10:
        return f"{ratio:.1f}x"
    return f"{ratio:.2f}x"


def verbose_line(record: RequestRecord) -> str:
    """The per-request line of `--verbose`, e.g. `Time taken: 12.98ms  HIT`."""
    outcome = record.response_class if record.error is None else f"error ({record.error})"
    return f"Time taken: {record.latency_ms:.2f}ms  {outcome}"


def render_run(summary: RunSummary, console: Console) -> None:
    """The full report of one run."""
    settings = summary.settings
    mode = f"open loop at {settings.get('rate')} req/s" if summary.open_loop else "closed loop"
    batch = settings.get("batch")
    console.print(
        Text(
            f"{settings.get('url')}  {_workload_text(settings)}  concurrency {settings.get('concurrency')}  "
            f"{mode}",
            style="bold",
        ),
        soft_wrap=True,  # one line however long the URL or inputs path
    )
    overview = Table.grid(padding=(0, 2))
    overview.add_column(style="bold")
    overview.add_column()
    if batch:
        overview.add_row(
            "Requests",
            f"{summary.requests} items in {summary.http_request_count} batch requests of {batch} "
            f"in {summary.duration_s:.2f} s",
        )
        overview.add_row(
            "Throughput",
            f"{summary.throughput_rps:.1f} items/s ({summary.http_throughput_rps:.1f} batch requests/s)",
        )
    else:
        overview.add_row("Requests", f"{summary.requests} in {summary.duration_s:.2f} s")
        overview.add_row("Throughput", f"{summary.throughput_rps:.1f} req/s")
    overview.add_row("Errors", _errors_text(summary))
    codes = ", ".join(f"{code}: {count}" for code, count in summary.status_codes.items()) or "none"
    overview.add_row("Status codes", codes)
    overview.add_row("Received", _bytes_text(summary.bytes_received))
    answered = summary.requests - summary.errors
    overview.add_row("Hit ratio", f"{summary.hit_ratio:.1%} of {answered} answered (HIT and STALE)")
    if summary.open_loop:
        overview.add_row(
            "Late starts",
            f"{summary.late_starts} of {summary.requests} started more than "
            f"{LATE_START_TOLERANCE_S * 1000:g} ms after they were due",
        )
    console.print(overview)
    console.print(_latency_table(summary))
    if summary.tokens is not None:
        console.print(_token_table(summary))
    for name, latency in summary.classes.items():
        encoded = summary.histograms.get("corrected", {}).get(name)
        if encoded is not None and latency.count:
            console.print(_histogram_text(name, latency, encoded))
    if batch:
        console.print("Batches: each item counts with its batch request's latency and its own cache class.")
    if summary.open_loop:
        console.print("Latency is measured from when each request was due (coordinated omission corrected);")
        console.print("the 'uncorrected' row measures from when it was actually sent.")
    else:
        console.print("Closed loop: each worker waits for a response before sending again, so a server stall")
        console.print(
            "delays requests that are never sent and tails may be understated; --rate corrects this."
        )


def _workload_text(settings: dict[str, object]) -> str:
    """`pairs ETH-EUR,BTC-EUR`, `inputs keys.jsonl (1000 lines, zipf 1.1, seed 0)  batch 32`, or
    `prompts chat.jsonl (50 lines)  streamed`."""
    source, lines = settings.get("inputs"), settings.get("input_lines")
    prompts = settings.get("prompts")
    pairs = settings.get("pairs")
    drawn = f", zipf {settings.get('zipf')}, seed {settings.get('seed')}" if settings.get("zipf") else ""
    if prompts is not None:
        streamed = "  streamed" if settings.get("stream") else ""
        text = f"prompts {prompts} ({lines} lines{drawn}){streamed}"
    elif source is not None:
        text = f"inputs {source} ({lines} lines{drawn})"
    else:
        text = "pairs " + (",".join(str(p) for p in pairs) if isinstance(pairs, list) and pairs else "-")
    batch = settings.get("batch")
    return f"{text}  batch {batch}" if batch else text


def render_thresholds(results: list[ThresholdResult], console: Console) -> None:
    for result in results:
        observed = "no such requests" if result.observed is None else _observed_text(result)
        verdict = "[green]pass[/green]" if result.passed else "[red]FAIL[/red]"
        console.print(f"{verdict}  {result.threshold.expression}  (observed {observed})")


def render_comparison(comparison: Comparison, console: Console) -> None:
    """Both runs side by side, per class, with the speed-up of each latency."""
    before, after = comparison.before, comparison.after
    for key, old, new in comparison.settings_differences:
        console.print(f"[yellow]warning:[/yellow] settings differ: {key} {old!r} -> {new!r}")
    headline = next(f for f in comparison.latencies if f.scope == "all" and f.metric == "p50")
    console.print(Text(f"p50: {_compared_line(headline)}", style="bold"))
    table = Table(title="Latency (ms), before -> after")
    for column in ("class", "metric", "before", "after", "speed-up"):
        table.add_column(column, justify="left" if column in ("class", "metric") else "right")
    previous_scope = None
    figures = comparison.latencies
    for i, figure in enumerate(figures):
        table.add_row(
            figure.scope if figure.scope != previous_scope else "",
            figure.metric,
            format_ms(figure.before) if figure.before is not None else "-",
            format_ms(figure.after) if figure.after is not None else "-",
            format_ratio(figure.speedup) if figure.speedup is not None else "-",
            end_section=i + 1 == len(figures) or figures[i + 1].scope != figure.scope,
        )
        previous_scope = figure.scope
    console.print(table)
    runs = Table(title="Runs")
    for column in ("", "before", "after"):
        runs.add_column(column, justify="left" if not column else "right")
    runs.add_row("requests", str(before.requests), str(after.requests))
    runs.add_row("errors", str(before.errors), str(after.errors))
    runs.add_row("throughput (req/s)", f"{before.throughput_rps:.1f}", f"{after.throughput_rps:.1f}")
    runs.add_row("hit ratio", f"{before.hit_ratio:.1%}", f"{after.hit_ratio:.1%}")
    for name in (name for name in CLASSES if name in before.classes or name in after.classes):
        old, new = before.classes.get(name), after.classes.get(name)
        runs.add_row(f"{name} count", str(old.count if old else 0), str(new.count if new else 0))
    console.print(runs)


def _compared_line(figure: ComparedFigure) -> str:
    before = f"{format_ms(figure.before)} ms" if figure.before is not None else "-"
    after = f"{format_ms(figure.after)} ms" if figure.after is not None else "-"
    ratio = f", {format_ratio(figure.speedup)}" if figure.speedup is not None else ""
    return f"{before} -> {after}{ratio}"


def _latency_table(summary: RunSummary) -> Table:
    table = Table(title="Latency (ms)")
    table.add_column("class")
    table.add_column("count", justify="right")
    for title, _ in _LATENCY_COLUMNS:
        table.add_column(title, justify="right")
    rows: list[tuple[str, LatencySummary]] = [("all", summary.latency)]
    if summary.open_loop:
        rows.append(("all, uncorrected", summary.uncorrected_latency))
    rows.extend(summary.classes.items())
    for name, latency in rows:
        table.add_row(
            name,
            str(latency.count),
            *(format_ms(latency.value(key)) if latency.count else "-" for _, key in _LATENCY_COLUMNS),
            end_section=name.startswith("all") and not (summary.open_loop and name == "all"),
        )
    return table


def _token_table(summary: RunSummary) -> Table:
    """LLM mode: time to first token, inter-token latency and end to end, per class, and the tokens."""
    table = Table(title="Tokens (ms; TTFT and e2e from when each request was due)")
    for column in ("class", "TTFT p50", "TTFT p99", "ITL p50", "ITL p99", "e2e p50", "e2e p99"):
        table.add_column(column, justify="left" if column == "class" else "right")
    table.add_column("output tokens", justify="right")
    table.add_column("tokens/s", justify="right")
    assert summary.tokens is not None
    rows = [("all", summary.tokens, summary.latency)]
    rows.extend((name, figures, summary.classes[name]) for name, figures in summary.class_tokens.items())
    for name, figures, e2e in rows:
        cells = [
            format_ms(latency.value(key)) if latency.count else "-"
            for latency in (figures.ttft, figures.itl, e2e)
            for key in ("p50", "p99")
        ]
        table.add_row(
            name,
            *cells,
            str(figures.output_tokens),
            f"{figures.output_tokens_per_s:.1f}",
            end_section=name == "all",
        )
    return table


def _histogram_text(name: str, latency: LatencySummary, encoded: str) -> Text:
    buckets = log_buckets(decode_histogram(encoded))
    largest = max(count for _, count in buckets)
    text = Text(f"{name} ({latency.count} requests)\n", style="bold")
    for upper_ms, count in buckets:
        bar = "█" * round(_HISTOGRAM_WIDTH * count / largest) if count else ""
        text.append(f"  <= {format_ms(upper_ms):>8} ms  {bar} {count}\n")
    return text


def _errors_text(summary: RunSummary) -> str:
    if not summary.errors:
        return "0"
    kinds = ", ".join(f"{kind}: {count}" for kind, count in summary.errors_by_kind.items())
    return f"{summary.errors} ({summary.error_rate:.1%}): {kinds}"


def _bytes_text(nbytes: int) -> str:
    size = float(nbytes)
    for unit in ("B", "KiB", "MiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def _observed_text(result: ThresholdResult) -> str:
    threshold, observed = result.threshold, result.observed
    assert observed is not None
    if threshold.metric in ("error_rate", "hit_ratio"):
        return f"{observed:.2%}"
    if threshold.metric in ("count", "requests", "http_requests", "errors", "late_starts"):
        return f"{observed:.0f}"
    if threshold.metric in ("throughput_rps", "rps"):
        return f"{observed:.1f} req/s"
    if threshold.metric == "output_tokens_per_s":
        return f"{observed:.1f} tokens/s"
    return f"{format_ms(observed)} ms"


def every_request_failed(errors_by_kind: dict[str, int], settings: RunSettings) -> str:
    """The line for a run whose every request failed: the errors, the request tried, and when nothing
    answered at the default address, the likely cause (the service on another port, or not started)."""
    kinds = ", ".join(f"{kind}: {count}" for kind, count in errors_by_kind.items())
    if settings.inputs:
        tried = f"POST {settings.post_url}"
    else:
        urls = settings.request_urls()
        tried = f"GET {urls[0]}" + (f" (and {len(urls) - 1} more pairs)" if len(urls) > 1 else "")
    line = f"loadtest: every request failed ({kinds}); tried {tried}"
    if "connect" in errors_by_kind and settings.url == DEFAULT_URL:
        line += (
            f"; nothing listens on port {URL(DEFAULT_URL).port}: start the service first (make run), "
            "or if it listens on another port, give make the same PORT= (make requests PORT=8080) "
            "or give --url"
        )
    return line
