"""Latency recording into HDR histograms, one per response class, and the percentiles derived from them.

Pure: no I/O. Latencies are recorded as integer microseconds and reported in milliseconds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from hdrh.histogram import HdrHistogram

from .classes import ERROR_CLASS, BatchItem
from .llm import Answer

LOWEST_TRACKABLE_US = 1
# An hour: longer than any timeout or corrected latency a run can produce; larger values are clamped.
HIGHEST_TRACKABLE_US = 3_600_000_000
SIGNIFICANT_FIGURES = 3

# (JSON key, percentile) in report order.
PERCENTILES: tuple[tuple[str, float], ...] = (
    ("p50", 50.0),
    ("p90", 90.0),
    ("p95", 95.0),
    ("p99", 99.0),
    ("p999", 99.9),
)
LATENCY_KEYS: tuple[str, ...] = ("min", "mean", *(key for key, _ in PERCENTILES), "max")


def new_histogram() -> HdrHistogram:
    """An empty histogram with the range and precision every run uses."""
    return HdrHistogram(LOWEST_TRACKABLE_US, HIGHEST_TRACKABLE_US, SIGNIFICANT_FIGURES)


def decode_histogram(encoded: str) -> HdrHistogram:
    """A histogram from its base64 "HISTFAAA..." form, as stored in a run's JSON."""
    histogram = new_histogram()
    histogram.decode_and_add(encoded)
    return histogram


def merge_histograms(histograms: Iterable[HdrHistogram]) -> HdrHistogram:
    """One histogram holding every value of the given ones."""
    merged = new_histogram()
    for histogram in histograms:
        merged.add(histogram)
    return merged


class Recorder:
    """Counts and latency histograms for one run; memory does not depend on the number of requests."""

    __slots__ = (
        "bytes_received",
        "completed",
        "corrected",
        "errors",
        "errors_by_kind",
        "http_requests",
        "itl",
        "late_starts",
        "output_tokens",
        "status_codes",
        "ttft",
        "uncorrected",
    )

    def __init__(self) -> None:
        self.corrected: dict[str, HdrHistogram] = {}
        self.uncorrected: dict[str, HdrHistogram] = {}
        # LLM mode, per class: time to first token, the gaps between tokens, and the tokens received.
        self.ttft: dict[str, HdrHistogram] = {}
        self.itl: dict[str, HdrHistogram] = {}
        self.output_tokens: dict[str, int] = {}
        self.status_codes: dict[int, int] = {}
        self.errors_by_kind: dict[str, int] = {}
        self.bytes_received = 0
        self.completed = 0  # items: requests, or each input of every batch
        self.http_requests = 0
        self.errors = 0
        self.late_starts = 0

    def record(
        self, response_class: str, status: int, nbytes: int, latency_us: int, uncorrected_us: int
    ) -> None:
        """Record one finished request: its class, status (0 for a transport failure), body size and
        its latency measured from the intended and from the actual start."""
        self.http_requests += 1
        self._record_item(response_class, status, nbytes, latency_us, uncorrected_us)

    def record_error(self, kind: str, status: int, nbytes: int, latency_us: int, uncorrected_us: int) -> None:
        """Record a failed request (a timeout, a transport error or an HTTP error status) as class "error"."""
        self.http_requests += 1
        self._record_error_item(kind, status, nbytes, latency_us, uncorrected_us)

    def record_batch(self, items: list[BatchItem], nbytes: int, latency_us: int, uncorrected_us: int) -> None:
        """Record one batch request: every item with the batch's latency and its own status and class
        (or error kind); the body's bytes are counted once."""
        self.http_requests += 1
        for status, response_class, kind in items:
            if kind is None:
                self._record_item(response_class, status, nbytes, latency_us, uncorrected_us)
            else:
                self._record_error_item(kind, status, nbytes, latency_us, uncorrected_us)
            nbytes = 0

    def record_answer(self, response_class: str, answer: Answer, late_s: float = 0.0) -> None:
        """LLM mode: a recorded request's tokens (see `record`). Its time to first token counts from
        when the request was due, like its latency (`late_s` late in an open loop)."""
        ttft = self.ttft.get(response_class)
        if ttft is None:
            ttft = self.ttft[response_class] = new_histogram()
            self.itl[response_class] = new_histogram()
        if answer.ttft_s is not None:
            ttft.record_value(_clamped_us(answer.ttft_s + late_s))
        itl = self.itl[response_class]
        for gap_s in answer.inter_token_s():
            itl.record_value(_clamped_us(gap_s))
        self.output_tokens[response_class] = self.output_tokens.get(response_class, 0) + answer.output_tokens

    def _record_error_item(
        self, kind: str, status: int, nbytes: int, latency_us: int, uncorrected_us: int
    ) -> None:
        self.errors_by_kind[kind] = self.errors_by_kind.get(kind, 0) + 1
        self.errors += 1
        self._record_item(ERROR_CLASS, status, nbytes, latency_us, uncorrected_us)

    def _record_item(
        self, response_class: str, status: int, nbytes: int, latency_us: int, uncorrected_us: int
    ) -> None:
        histogram = self.corrected.get(response_class)
        if histogram is None:
            histogram = self.corrected[response_class] = new_histogram()
            self.uncorrected[response_class] = new_histogram()
        histogram.record_value(min(max(latency_us, 1), HIGHEST_TRACKABLE_US))
        self.uncorrected[response_class].record_value(min(max(uncorrected_us, 1), HIGHEST_TRACKABLE_US))
        if status:
            self.status_codes[status] = self.status_codes.get(status, 0) + 1
        self.bytes_received += nbytes
        self.completed += 1


def _clamped_us(seconds: float) -> int:
    return min(max(int(seconds * 1_000_000), LOWEST_TRACKABLE_US), HIGHEST_TRACKABLE_US)


@dataclass(frozen=True)
class LatencySummary:
    """Latency figures in milliseconds for one set of requests."""

    count: int
    min: float
    mean: float
    p50: float
    p90: float
    p95: float
    p99: float
    p999: float
    max: float

    @classmethod
    def from_histogram(cls, histogram: HdrHistogram) -> LatencySummary:
        count = int(histogram.get_total_count())
        if count == 0:
            return cls(0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
        values = histogram.get_percentile_to_value_dict([p for _, p in PERCENTILES])
        p50, p90, p95, p99, p999 = (values[p] / 1000 for _, p in PERCENTILES)
        return cls(
            count=count,
            min=histogram.get_min_value() / 1000,
            mean=histogram.get_mean_value() / 1000,
            p50=p50,
            p90=p90,
            p95=p95,
            p99=p99,
            p999=p999,
            max=histogram.get_max_value() / 1000,
        )

    @classmethod
    def from_dict(cls, count: int, latency_ms: Mapping[str, float]) -> LatencySummary:
        return cls(count, *(float(latency_ms[key]) for key in LATENCY_KEYS))

    def value(self, key: str) -> float:
        """The figure named by a JSON key such as "p99"."""
        return float(getattr(self, key))

    def as_dict(self) -> dict[str, float]:
        return {key: round(self.value(key), 4) for key in LATENCY_KEYS}


def log_buckets(histogram: HdrHistogram) -> list[tuple[float, int]]:
    """Counts per log-scale bucket (1-2-5 steps), as (upper bound in ms, count), from the first
    non-empty bucket to the last."""
    counts: dict[int, int] = {}
    for step in histogram.get_recorded_iterator():
        bound = _bucket_bound_us(int(step.value_iterated_to))
        counts[bound] = counts.get(bound, 0) + int(step.count_at_value_iterated_to)
    if not counts:
        return []
    bounds = _bucket_bounds_between(min(counts), max(counts))
    return [(bound / 1000, counts.get(bound, 0)) for bound in bounds]


def _bucket_bound_us(value_us: int) -> int:
    """The smallest 1-2-5 bound (10 us, 20 us, 50 us, 100 us, ...) at or above value_us."""
    bound = 10
    while True:
        for step in (1, 2, 5):
            if value_us <= bound * step:
                return bound * step
        bound *= 10


def _bucket_bounds_between(low_us: int, high_us: int) -> list[int]:
    bounds: list[int] = []
    bound = 10
    while bound <= high_us:
        for step in (1, 2, 5):
            if low_us <= bound * step <= high_us:
                bounds.append(bound * step)
        bound *= 10
    return bounds
