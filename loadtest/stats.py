"""Latency recording into HDR histograms, one per response class, and the figures derived from them.

Pure: no I/O. Latencies are recorded as integer microseconds and reported in milliseconds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import orjson
from hdrh.histogram import HdrHistogram

SCHEMA_VERSION = 1
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

# Every class a response can fall in, in report order. The set is closed so that a server sending
# arbitrary X-Cache values cannot make the recorder allocate a histogram per value.
CLASSES: tuple[str, ...] = ("HIT", "STALE", "MISS", "collapsed", "other", "none", "error")
HIT_CLASSES = frozenset({"HIT", "STALE"})
ERROR_CLASS = "error"

_X_CACHE_CLASSES = {"HIT": "HIT", "MISS": "MISS", "STALE": "STALE"}
# A batch result's "cache" member, as the single endpoint's headers would classify it.
_BATCH_CACHE_CLASSES = {"HIT": "HIT", "STALE": "STALE", "MISS": "MISS", "collapsed": "collapsed"}

# One item of a batch response: (status, class, error kind or None).
BatchItem = tuple[int, str, str | None]


def classify(x_cache: str | None, cache_status: str | None) -> str:
    """The class of a successful response from its `X-Cache` and `Cache-Status` (RFC 9211) headers."""
    if cache_status is not None and "collapsed" in cache_status:
        return "collapsed"
    if x_cache is not None:
        return _X_CACHE_CLASSES.get(x_cache.strip().upper(), "other")
    if cache_status is not None:
        params = {part.strip().lower() for part in cache_status.split(";")}
        if "fwd=stale" in params:
            return "STALE"
        if "hit" in params:
            return "HIT"
        if any(param.startswith("fwd=") for param in params):
            return "MISS"
        return "other"
    return "none"


def classify_batch(status: int, body: bytes | None, size: int) -> list[BatchItem]:
    """The outcome of each of the `size` items of a `POST /predict/batch` answered with `status`.

    A 200 body is `{"results": [...]}` in request order, each `{"status": 200, "cache": ...}` or
    `{"status": 404|503|504, "error": ...}`; an item's error kind is `HTTP <its status>`, as for a
    single request. A batch that failed as a whole (any other status), or a body that is not that
    shape for `size` items, makes every item an error of that kind.
    """
    if status != 200:
        return [(status, ERROR_CLASS, f"HTTP {status}")] * size
    try:
        results = orjson.loads(body or b"")["results"]
    except (orjson.JSONDecodeError, TypeError, KeyError):
        results = None
    if not isinstance(results, list) or len(results) != size:
        return [(status, ERROR_CLASS, "bad batch response")] * size
    items: list[BatchItem] = []
    for result in results:
        item_status = result.get("status") if isinstance(result, dict) else None
        if not isinstance(item_status, int) or isinstance(item_status, bool):
            items.append((status, ERROR_CLASS, "bad batch response"))
        elif item_status >= 400:
            items.append((item_status, ERROR_CLASS, f"HTTP {item_status}"))
        else:
            cache = result.get("cache")
            name = _BATCH_CACHE_CLASSES.get(cache, "other") if isinstance(cache, str) else "none"
            items.append((item_status, name, None))
    return items


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
        "late_starts",
        "status_codes",
        "uncorrected",
    )

    def __init__(self) -> None:
        self.corrected: dict[str, HdrHistogram] = {}
        self.uncorrected: dict[str, HdrHistogram] = {}
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


@dataclass(frozen=True)
class RunSummary:
    """Everything a finished run reports; the form written to and read from `--json`."""

    settings: dict[str, object]
    started_at: str
    duration_s: float
    requests: int
    errors: int
    errors_by_kind: dict[str, int]
    status_codes: dict[int, int]
    bytes_received: int
    late_starts: int
    open_loop: bool
    latency: LatencySummary
    uncorrected_latency: LatencySummary
    classes: dict[str, LatencySummary]
    histograms: dict[str, dict[str, str]] = field(default_factory=dict)
    # HTTP requests sent: `requests` counts items, and with `--batch N` a request carries N of them.
    http_requests: int | None = None

    @property
    def http_request_count(self) -> int:
        return self.requests if self.http_requests is None else self.http_requests

    @property
    def throughput_rps(self) -> float:
        """Items (requests, or inputs of batches) answered per second."""
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def http_throughput_rps(self) -> float:
        return self.http_request_count / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def hit_ratio(self) -> float:
        """Share of answered (non-error) requests served from the cache, stale ones included."""
        answered = self.requests - self.errors
        hits = sum(self.classes[name].count for name in HIT_CLASSES if name in self.classes)
        return hits / answered if answered else 0.0

    def to_json(self) -> dict[str, object]:
        return {
            "schema_version": SCHEMA_VERSION,
            "settings": self.settings,
            "started_at": self.started_at,
            "duration_s": round(self.duration_s, 6),
            "requests": self.requests,
            "http_requests": self.http_request_count,
            "errors": self.errors,
            "errors_by_kind": self.errors_by_kind,
            "status_codes": {str(code): count for code, count in sorted(self.status_codes.items())},
            "bytes_received": self.bytes_received,
            "throughput_rps": round(self.throughput_rps, 3),
            "http_throughput_rps": round(self.http_throughput_rps, 3),
            "error_rate": round(self.error_rate, 6),
            "hit_ratio": round(self.hit_ratio, 6),
            "open_loop": self.open_loop,
            "late_starts": self.late_starts,
            "latency_ms": self.latency.as_dict(),
            "uncorrected_latency_ms": self.uncorrected_latency.as_dict(),
            "classes": {
                name: {"count": summary.count, "latency_ms": summary.as_dict()}
                for name, summary in self.classes.items()
            },
            "histograms": {
                "unit": "us",
                "significant_figures": SIGNIFICANT_FIGURES,
                **self.histograms,
            },
        }

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> RunSummary:
        """A summary read back from `to_json`'s form; KeyError, TypeError or ValueError if malformed."""
        if data.get("schema_version") != SCHEMA_VERSION:
            raise ValueError(f"unsupported schema_version {data.get('schema_version')!r}")
        classes_data = _mapping(data["classes"])
        classes = {
            str(name): LatencySummary.from_dict(
                int(_number(_mapping(entry)["count"])), _latency_map(_mapping(entry)["latency_ms"])
            )
            for name, entry in classes_data.items()
        }
        requests = int(_number(data["requests"]))
        histograms = _mapping(data.get("histograms", {}))
        return cls(
            settings=dict(_mapping(data["settings"])),
            started_at=str(data.get("started_at", "")),
            duration_s=float(_number(data["duration_s"])),
            requests=requests,
            errors=int(_number(data["errors"])),
            errors_by_kind={str(k): int(_number(v)) for k, v in _mapping(data["errors_by_kind"]).items()},
            status_codes={int(k): int(_number(v)) for k, v in _mapping(data["status_codes"]).items()},
            bytes_received=int(_number(data["bytes_received"])),
            late_starts=int(_number(data["late_starts"])),
            open_loop=bool(data["open_loop"]),
            latency=LatencySummary.from_dict(requests, _latency_map(data["latency_ms"])),
            uncorrected_latency=LatencySummary.from_dict(
                requests, _latency_map(data["uncorrected_latency_ms"])
            ),
            classes=classes,
            histograms={
                kind: {str(k): str(v) for k, v in _mapping(value).items()}
                for kind, value in histograms.items()
                if kind in ("corrected", "uncorrected")
            },
            # Absent from runs written before batches: one HTTP request per item then.
            http_requests=int(_number(data.get("http_requests", requests))),
        )


def summarize(
    recorder: Recorder, settings: dict[str, object], *, started_at: str, duration_s: float, open_loop: bool
) -> RunSummary:
    """The summary of a finished run."""
    ordered = [name for name in CLASSES if name in recorder.corrected]
    corrected = {name: recorder.corrected[name] for name in ordered}
    uncorrected = {name: recorder.uncorrected[name] for name in ordered}
    return RunSummary(
        settings=settings,
        started_at=started_at,
        duration_s=duration_s,
        requests=recorder.completed,
        errors=recorder.errors,
        errors_by_kind=dict(sorted(recorder.errors_by_kind.items())),
        status_codes=dict(sorted(recorder.status_codes.items())),
        bytes_received=recorder.bytes_received,
        late_starts=recorder.late_starts,
        open_loop=open_loop,
        latency=LatencySummary.from_histogram(merge_histograms(corrected.values())),
        uncorrected_latency=LatencySummary.from_histogram(merge_histograms(uncorrected.values())),
        classes={name: LatencySummary.from_histogram(h) for name, h in corrected.items()},
        histograms={
            "corrected": {name: _encode(h) for name, h in corrected.items()},
            "uncorrected": {name: _encode(h) for name, h in uncorrected.items()},
        },
        http_requests=recorder.http_requests,
    )


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


def _encode(histogram: HdrHistogram) -> str:
    encoded: bytes = histogram.encode()
    return encoded.decode("ascii")


def _mapping(value: object) -> Mapping[str, object]:
    if not isinstance(value, Mapping):
        raise TypeError(f"expected an object, got {type(value).__name__}")
    return value


def _number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"expected a number, got {value!r}")
    return value


def _latency_map(value: object) -> dict[str, float]:
    return {key: float(_number(_mapping(value)[key])) for key in LATENCY_KEYS}
