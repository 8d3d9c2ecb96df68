"""The summary of a finished run, and its JSON form (`--json`, read back by `compare`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from hdrh.histogram import HdrHistogram

from .classes import CLASSES, HIT_CLASSES
from .stats import LATENCY_KEYS, SIGNIFICANT_FIGURES, LatencySummary, Recorder, merge_histograms

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class TokenFigures:
    """LLM mode's figures for one set of requests: time to first token and the gaps between tokens
    (ms), the output tokens received and their rate over the run (the classes' rates add up)."""

    ttft: LatencySummary
    itl: LatencySummary
    output_tokens: int
    output_tokens_per_s: float

    def as_dict(self, e2e: LatencySummary) -> dict[str, object]:
        return {
            "ttft_ms": {"count": self.ttft.count, **self.ttft.as_dict()},
            "itl_ms": {"count": self.itl.count, **self.itl.as_dict()},
            "e2e_ms": {"count": e2e.count, **e2e.as_dict()},
            "output_tokens": self.output_tokens,
            "output_tokens_per_s": round(self.output_tokens_per_s, 3),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> TokenFigures:
        ttft, itl = _mapping(data["ttft_ms"]), _mapping(data["itl_ms"])
        return cls(
            ttft=LatencySummary.from_dict(int(_number(ttft["count"])), _latency_map(ttft)),
            itl=LatencySummary.from_dict(int(_number(itl["count"])), _latency_map(itl)),
            output_tokens=int(_number(data["output_tokens"])),
            output_tokens_per_s=float(_number(data["output_tokens_per_s"])),
        )


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
    # LLM mode: every answered request's tokens, and per class (empty otherwise).
    tokens: TokenFigures | None = None
    class_tokens: dict[str, TokenFigures] = field(default_factory=dict)

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
        classes: dict[str, object] = {}
        for name, summary in self.classes.items():
            entry: dict[str, object] = {"count": summary.count, "latency_ms": summary.as_dict()}
            figures = self.class_tokens.get(name)
            if figures is not None:
                entry.update(figures.as_dict(summary))
            classes[name] = entry
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
            **(self.tokens.as_dict(self.latency) if self.tokens is not None else {}),
            "classes": classes,
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
        class_tokens = {
            str(name): TokenFigures.from_dict(_mapping(entry))
            for name, entry in classes_data.items()
            if "ttft_ms" in _mapping(entry)
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
            tokens=TokenFigures.from_dict(data) if "ttft_ms" in data else None,
            class_tokens=class_tokens,
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
        tokens=_token_figures(
            recorder.ttft.values(), recorder.itl.values(), recorder.output_tokens.values(), duration_s
        )
        if recorder.ttft
        else None,
        class_tokens={
            name: _token_figures(
                [recorder.ttft[name]], [recorder.itl[name]], [recorder.output_tokens[name]], duration_s
            )
            for name in ordered
            if name in recorder.ttft
        },
    )


def _token_figures(
    ttft: Iterable[HdrHistogram], itl: Iterable[HdrHistogram], tokens: Iterable[int], duration_s: float
) -> TokenFigures:
    total = sum(tokens)
    return TokenFigures(
        ttft=LatencySummary.from_histogram(merge_histograms(ttft)),
        itl=LatencySummary.from_histogram(merge_histograms(itl)),
        output_tokens=total,
        output_tokens_per_s=total / duration_s if duration_s > 0 else 0.0,
    )


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
