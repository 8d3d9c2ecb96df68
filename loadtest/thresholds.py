"""`--fail-on` expressions such as `p99<200ms`, `HIT.p95<5ms`, `error_rate<1%`, `hit_ratio>0.9`, and in
LLM mode `HIT.ttft_ms.p99<5ms`, `itl_ms.p50<30ms`, `output_tokens_per_s>100`."""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass

from .classes import CLASSES
from .stats import LATENCY_KEYS
from .summary import RunSummary


class ThresholdError(ValueError):
    """An expression that does not parse or names an unknown metric, class or unit."""

    def __init__(self, expression: str, reason: str) -> None:
        super().__init__(f"--fail-on {expression!r}: {reason}")
        self.expression = expression
        self.reason = reason


_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "<": operator.lt,
    ">": operator.gt,
}
_LATENCY_ALIASES = {"p99.9": "p999", "avg": "mean"}
_LATENCY_UNITS_MS = {"": 1.0, "ms": 1.0, "s": 1000.0, "us": 0.001, "µs": 0.001}
# Run-level metrics: name -> units allowed with their factor to the metric's own scale.
_RATIO_UNITS = {"": 1.0, "%": 0.01}
_RUN_METRICS: dict[str, dict[str, float]] = {
    "error_rate": _RATIO_UNITS,
    "hit_ratio": _RATIO_UNITS,
    "throughput_rps": {"": 1.0, "rps": 1.0},
    "rps": {"": 1.0, "rps": 1.0},
    "requests": {"": 1.0},
    "http_requests": {"": 1.0},
    "errors": {"": 1.0},
    "late_starts": {"": 1.0},
}
# LLM mode: latencies of a run's tokens (e2e_ms is the request's latency, by its LLM name), and the
# output token rate, overall or per class.
TOKEN_LATENCIES = ("ttft_ms", "itl_ms", "e2e_ms")
TOKEN_RATE = "output_tokens_per_s"
_EXPRESSION = re.compile(
    r"^\s*(?P<left>[A-Za-z0-9_.]+)\s*(?P<op><=|>=|<|>)\s*(?P<number>[0-9]*\.?[0-9]+)\s*(?P<unit>[a-zµ%]*)\s*$"
)
_CLASS_NAMES = {name.lower(): name for name in CLASSES}


@dataclass(frozen=True)
class Threshold:
    """One parsed expression; `limit` is in ms for latency metrics and in the metric's own scale otherwise."""

    expression: str
    metric: str
    op: str
    limit: float
    response_class: str | None = None
    token_latency: str | None = None  # one of TOKEN_LATENCIES: `metric` is a percentile of it

    @property
    def is_latency(self) -> bool:
        return self.metric in LATENCY_KEYS or self.metric == "count"


@dataclass(frozen=True)
class ThresholdResult:
    """A threshold checked against a run; `observed` is None when the run has no such requests."""

    threshold: Threshold
    observed: float | None
    passed: bool


def parse_threshold(expression: str) -> Threshold:
    """Parse one `--fail-on` expression; raises ThresholdError for anything it does not understand."""
    match = _EXPRESSION.match(expression)
    if match is None:
        raise ThresholdError(expression, "expected METRIC<VALUE, e.g. p99<200ms or HIT.p95<5ms")
    left, op, unit = match["left"], match["op"], match["unit"]
    number = float(match["number"])
    parts = left.split(".")
    tokens = [i for i, part in enumerate(parts) if part in (*TOKEN_LATENCIES, TOKEN_RATE)]
    if tokens:
        return _parse_token_threshold(expression, parts, tokens[0], op, number, unit)
    response_class: str | None = None
    metric = _LATENCY_ALIASES.get(left, left)
    if metric not in LATENCY_KEYS and metric not in _RUN_METRICS and "." in left:
        prefix, _, rest = left.partition(".")
        response_class = _CLASS_NAMES.get(prefix.lower())
        if response_class is None:
            raise ThresholdError(expression, f"unknown class {prefix!r} (known: {', '.join(CLASSES)})")
        metric = _LATENCY_ALIASES.get(rest, rest)
        if metric not in LATENCY_KEYS and metric != "count":
            raise ThresholdError(
                expression, f"unknown per-class metric {rest!r} (known: {', '.join(LATENCY_KEYS)}, count)"
            )
    if metric in LATENCY_KEYS:
        factor = _LATENCY_UNITS_MS.get(unit)
        if factor is None:
            raise ThresholdError(expression, f"unknown latency unit {unit!r} (use ms, s or us)")
        return Threshold(expression, metric, op, number * factor, response_class)
    if metric == "count" and response_class is not None:
        if unit:
            raise ThresholdError(expression, f"a count takes no unit, got {unit!r}")
        return Threshold(expression, metric, op, number, response_class)
    units = _RUN_METRICS.get(metric)
    if units is None:
        known = ", ".join([*LATENCY_KEYS, *_RUN_METRICS])
        raise ThresholdError(expression, f"unknown metric {metric!r} (known: {known})")
    if unit not in units:
        raise ThresholdError(expression, f"unit {unit!r} does not apply to {metric}")
    return Threshold(expression, metric, op, number * units[unit])


def _parse_token_threshold(
    expression: str, parts: list[str], at: int, op: str, number: float, unit: str
) -> Threshold:
    """`[CLASS.]ttft_ms.P`, `[CLASS.]itl_ms.P`, `[CLASS.]e2e_ms.P` or `[CLASS.]output_tokens_per_s`."""
    if at > 1:
        raise ThresholdError(
            expression, "expected [CLASS.]ttft_ms.p99, [CLASS.]itl_ms.p50 or [CLASS.]output_tokens_per_s"
        )
    response_class = None
    if at == 1:
        response_class = _CLASS_NAMES.get(parts[0].lower())
        if response_class is None:
            raise ThresholdError(expression, f"unknown class {parts[0]!r} (known: {', '.join(CLASSES)})")
    name, rest = parts[at], ".".join(parts[at + 1 :])
    if name == TOKEN_RATE:
        if rest or unit:
            raise ThresholdError(expression, f"{TOKEN_RATE} takes no percentile and no unit")
        return Threshold(expression, TOKEN_RATE, op, number, response_class)
    metric = _LATENCY_ALIASES.get(rest, rest)
    if metric not in LATENCY_KEYS:
        raise ThresholdError(expression, f"{name} needs one of {', '.join(LATENCY_KEYS)}, e.g. {name}.p99")
    factor = _LATENCY_UNITS_MS.get(unit)
    if factor is None:
        raise ThresholdError(expression, f"unknown latency unit {unit!r} (use ms, s or us)")
    return Threshold(expression, metric, op, number * factor, response_class, token_latency=name)


def evaluate(threshold: Threshold, summary: RunSummary) -> ThresholdResult:
    """Check a threshold; a class with no requests in the run fails rather than passing silently."""
    observed = _observe(threshold, summary)
    if observed is None:
        return ThresholdResult(threshold, None, passed=False)
    return ThresholdResult(threshold, observed, _OPERATORS[threshold.op](observed, threshold.limit))


def _observe(threshold: Threshold, summary: RunSummary) -> float | None:
    if threshold.token_latency not in (None, "e2e_ms") or threshold.metric == TOKEN_RATE:
        return _observe_tokens(threshold, summary)
    if threshold.response_class is not None:
        latency = summary.classes.get(threshold.response_class)
        if latency is None or latency.count == 0:
            return None
        return float(latency.count) if threshold.metric == "count" else latency.value(threshold.metric)
    if threshold.metric in LATENCY_KEYS:
        return summary.latency.value(threshold.metric) if summary.requests else None
    values = {
        "error_rate": summary.error_rate,
        "hit_ratio": summary.hit_ratio,
        "throughput_rps": summary.throughput_rps,
        "rps": summary.throughput_rps,
        "requests": float(summary.requests),
        "http_requests": float(summary.http_request_count),
        "errors": float(summary.errors),
        "late_starts": float(summary.late_starts),
    }
    return values[threshold.metric]


def _observe_tokens(threshold: Threshold, summary: RunSummary) -> float | None:
    """A TTFT or inter-token percentile, or the output token rate; None without LLM figures for it."""
    if threshold.response_class is None:
        figures = summary.tokens
    else:
        figures = summary.class_tokens.get(threshold.response_class)
    if figures is None:
        return None
    if threshold.metric == TOKEN_RATE:
        return figures.output_tokens_per_s
    latency = figures.ttft if threshold.token_latency == "ttft_ms" else figures.itl
    return latency.value(threshold.metric) if latency.count else None
