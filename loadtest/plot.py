"""`--plot`: latency over time coloured by class, and the percentile spectrum (needs the `plot` extra)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from .runner import RequestRecord
from .stats import decode_histogram
from .summary import RunSummary

PLOT_MISSING = "--plot needs matplotlib: install the plot extra (uv sync --extra plot)"


def plotting_available() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


class LatencyTimeline:
    """A request observer keeping at most `capacity` (start, latency, class) points.

    When full it drops every other point and keeps one request in twice as many from then on, so
    memory stays bounded for any number of requests while the points still span the whole run.
    """

    def __init__(self, capacity: int = 50_000) -> None:
        self.points: list[tuple[float, float, str]] = []
        self._capacity = capacity
        self._stride = 1
        self._seen = 0

    def __call__(self, record: RequestRecord) -> None:
        self._seen += 1
        if self._seen % self._stride:
            return
        self.points.append((record.intended_start_ms / 1000, record.latency_ms, record.response_class))
        if len(self.points) >= self._capacity:
            del self.points[1::2]
            self._stride *= 2


def draw_plot(summary: RunSummary, timeline: LatencyTimeline, path: Path) -> None:
    """Write a PNG with latency over time (top) and the percentile spectrum per class (bottom)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (over_time, spectrum) = plt.subplots(2, 1, figsize=(10, 8))
    for name in summary.classes:
        xs = [t for t, _, cls in timeline.points if cls == name]
        ys = [latency for _, latency, cls in timeline.points if cls == name]
        over_time.scatter(xs, ys, s=4, label=name)
    over_time.set_xlabel("time since start (s)")
    over_time.set_ylabel("latency (ms)")
    over_time.set_yscale("log")
    over_time.legend(loc="upper right")
    over_time.set_title("Latency over time")
    for name, encoded in summary.histograms.get("corrected", {}).items():
        histogram = decode_histogram(encoded)
        xs, ys = [], []
        for step in histogram.get_percentile_iterator(5):
            percentile = min(float(step.percentile_level_iterated_to), 99.9999)
            xs.append(1 / (1 - percentile / 100))
            ys.append(step.value_iterated_to / 1000)
        spectrum.plot(xs, ys, label=name)
    spectrum.set_xscale("log")
    spectrum.set_xlabel("percentile")
    spectrum.set_xticks([1, 2, 10, 100, 1000, 10000], ["0%", "50%", "90%", "99%", "99.9%", "99.99%"])
    spectrum.set_ylabel("latency (ms)")
    spectrum.legend(loc="upper left")
    spectrum.set_title("Percentile spectrum")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
