"""`python -m loadtest compare before.json after.json`: two runs side by side, per class, with ratios."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import orjson

from .classes import CLASSES
from .stats import LatencySummary
from .summary import RunSummary

COMPARED_LATENCIES: tuple[str, ...] = ("p50", "p90", "p99", "mean", "max")
COMPARED_TOKEN_LATENCIES: tuple[str, ...] = ("p50", "p99")
# Settings that describe the load itself; a difference in any of them makes the comparison unfair.
COMPARED_SETTINGS: tuple[str, ...] = (
    "url",
    "pairs",
    "requests",
    "concurrency",
    "duration_s",
    "rate",
    "timeout_s",
    "warmup",
    "mode",
    "prompts",
    "stream",
)


class RunFileError(ValueError):
    """A run file that cannot be read or is not a `--json` output of this tool."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


@dataclass(frozen=True)
class ComparedFigure:
    """One figure in both runs; `speedup` is before/after for latencies (above 1 means faster)."""

    scope: str
    metric: str
    before: float | None
    after: float | None

    @property
    def speedup(self) -> float | None:
        if self.before is None or self.after is None or self.after <= 0 or self.before <= 0:
            return None
        return self.before / self.after


@dataclass(frozen=True)
class Comparison:
    """Everything `compare` prints."""

    before: RunSummary
    after: RunSummary
    latencies: list[ComparedFigure]
    settings_differences: list[tuple[str, object, object]]


def load_run(path: Path) -> RunSummary:
    """Read a run written by `--json`."""
    try:
        data = orjson.loads(path.read_bytes())
    except OSError as exc:
        raise RunFileError(path, exc.strerror or str(exc)) from exc
    except orjson.JSONDecodeError as exc:
        raise RunFileError(path, f"not JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise RunFileError(path, "not a loadtest run (expected a JSON object)")
    try:
        return RunSummary.from_json(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise RunFileError(path, f"not a loadtest run ({type(exc).__name__}: {exc})") from exc


def compare_runs(before: RunSummary, after: RunSummary) -> Comparison:
    """Line up the latencies of both runs, overall and for each class either run has."""
    scopes: list[tuple[str, LatencySummary | None, LatencySummary | None]] = [
        ("all", before.latency if before.requests else None, after.latency if after.requests else None)
    ]
    for name in CLASSES:
        if name in before.classes or name in after.classes:
            scopes.append((name, before.classes.get(name), after.classes.get(name)))
    figures = [
        ComparedFigure(
            scope,
            metric,
            old.value(metric) if old is not None else None,
            new.value(metric) if new is not None else None,
        )
        for scope, old, new in scopes
        for metric in COMPARED_LATENCIES
    ]
    if before.tokens is not None or after.tokens is not None:
        figures.extend(_token_figures(before, after, [scope for scope, _, _ in scopes]))
    differences = [
        (key, before.settings.get(key), after.settings.get(key))
        for key in COMPARED_SETTINGS
        if before.settings.get(key) != after.settings.get(key)
    ]
    return Comparison(before, after, figures, differences)


def _token_figures(before: RunSummary, after: RunSummary, scopes: list[str]) -> list[ComparedFigure]:
    """LLM mode: TTFT and inter-token latency percentiles, overall and per class, in both runs."""

    def latency(run: RunSummary, scope: str, name: str, metric: str) -> float | None:
        figures = run.tokens if scope == "all" else run.class_tokens.get(scope)
        if figures is None:
            return None
        summary = figures.ttft if name == "ttft" else figures.itl
        return summary.value(metric) if summary.count else None

    return [
        ComparedFigure(
            scope,
            f"{name} {metric}",
            latency(before, scope, name, metric),
            latency(after, scope, name, metric),
        )
        for scope in scopes
        for name in ("ttft", "itl")
        for metric in COMPARED_TOKEN_LATENCIES
    ]
