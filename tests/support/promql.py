"""The metric and label names a PromQL expression (or a Grafana panel's, with its $variables) refers to.

Not a parser: it removes what cannot name a metric (strings, ranges, numbers, grouping clauses), so
what is left is functions (followed by a parenthesis), operators' keywords and metric names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# Every function and aggregation of PromQL (Prometheus 2.x docs, "Functions" and "Operators").
FUNCTIONS = frozenset(
    """abs absent absent_over_time avg avg_over_time bottomk ceil changes clamp clamp_max clamp_min
    count count_over_time count_values day_of_month day_of_week day_of_year days_in_month delta deriv
    exp floor group histogram_count histogram_fraction histogram_quantile histogram_sum holt_winters
    hour idelta increase irate label_join label_replace last_over_time limitk limit_ratio ln log10 log2
    mad_over_time max max_over_time min min_over_time minute month predict_linear present_over_time
    quantile quantile_over_time rate resets round scalar sgn sort sort_desc sort_by_label
    sort_by_label_desc sqrt stddev stddev_over_time stdvar stdvar_over_time sum sum_over_time time
    timestamp topk vector year acos acosh asin asinh atan atanh cos cosh deg pi rad sin sinh
    tan tanh""".split()  # noqa: SIM905 (a word list reads better than 90 quoted lines)
)
# `group_left` may stand without a label list; the rest are only here should one be written oddly.
KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "inf", "nan", "offset"}
    | {"by", "without", "on", "ignoring", "group_left", "group_right"}
)

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_SELECTOR = re.compile(r"([a-zA-Z_:][\w:]*)\s*\{([^}]*)\}")
_MATCHER_LABEL = re.compile(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_OFFSET = re.compile(r"\boffset\s+-?\w+")
_NUMBER = re.compile(r"(?<![\w:])(?:0x[0-9a-fA-F]+|\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+)")
_IDENTIFIER = re.compile(r"([a-zA-Z_:][\w:]*)(\s*\()?")


@dataclass
class References:
    """What one expression names."""

    metrics: set[str] = field(default_factory=set)
    functions: set[str] = field(default_factory=set)
    # metric -> label names in its own matchers, e.g. {result=~"hit|stale"}
    matcher_labels: dict[str, set[str]] = field(default_factory=dict)
    # label names in by/without/on/ignoring/group_left/group_right clauses
    grouping_labels: set[str] = field(default_factory=set)


def references(expression: str) -> References:
    found = References()
    text = _STRING.sub('""', expression)
    for metric, matchers in _SELECTOR.findall(text):
        found.matcher_labels.setdefault(metric, set()).update(_MATCHER_LABEL.findall(matchers))
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    for labels in _GROUPING.findall(text):
        found.grouping_labels.update(label.strip() for label in labels.split(",") if label.strip())
    text = _GROUPING.sub(" ", text)
    text = _OFFSET.sub(" ", text)
    text = _NUMBER.sub(" ", text)
    for name, call in _IDENTIFIER.findall(text):
        if call:
            found.functions.add(name)
        elif name not in KEYWORDS:
            found.metrics.add(name)
    return found


def as_promql(grafana_expression: str) -> str:
    """A Grafana panel's expression with its variables replaced, so promtool can check the syntax."""
    text = grafana_expression.replace("$__rate_interval", "5m").replace("$__interval", "1m")
    return re.sub(r"\$\{?\w+\}?", ".*", text)
