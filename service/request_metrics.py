"""What every request counts (requests, their latency, cache lookups) as plain numbers, turned into
Prometheus samples only when /metrics is scraped.

prometheus-client's own counters and histograms take a lock and, for labels, build a key on every
update: a few microseconds per request, which on the hit path is a tenth of its cost. The event loop
is the only writer here, so plain integers suffice, and a custom collector (prometheus-client's API
for exactly this) reads them at scrape time under the same names and meanings as before.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterator, Sequence

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

LOOKUP_RESULTS = ("hit", "miss", "stale", "error")


class Tally:
    """A counter only the event loop increments: `inc()` like prometheus-client's, without a lock."""

    __slots__ = ("created", "value")

    def __init__(self) -> None:
        self.value = 0
        self.created = time.time()

    def inc(self, amount: int = 1) -> None:
        self.value += amount


class LatencyHistogram:
    """Observations counted per bucket (`le`: at most the bound), made cumulative at scrape time."""

    __slots__ = ("bounds", "counts", "created", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.sum = 0.0
        self.created = time.time()

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.sum += seconds

    def cumulative(self) -> list[tuple[str, float]]:
        buckets, total = [], 0
        for bound, count in zip((*map(floatToGoString, self.bounds), "+Inf"), self.counts, strict=True):
            total += count
            buckets.append((bound, float(total)))
        return buckets


class RequestMetrics(Collector):
    """`predcache_requests_total{endpoint,status}`, `predcache_request_duration_seconds{endpoint}`
    and `predcache_cache_lookups_total{result}`."""

    def __init__(self, latency_buckets_s: Sequence[float]) -> None:
        self._buckets = tuple(latency_buckets_s)
        # (endpoint, status) -> its request count and its endpoint's latencies: one lookup a request.
        self._by_status: dict[tuple[str, int], tuple[Tally, LatencyHistogram]] = {}
        self._durations: dict[str, LatencyHistogram] = {}
        self.lookups = {result: Tally() for result in LOOKUP_RESULTS}

    def observe(self, endpoint: str, status: int, duration_s: float) -> None:
        """One answered request. `endpoint` is a route, never a raw path: unknown paths must not
        create new series."""
        requests, latencies = self._by_status.get((endpoint, status)) or self.series(endpoint, status)
        requests.value += 1
        latencies.observe(duration_s)

    def series(self, endpoint: str, status: int) -> tuple[Tally, LatencyHistogram]:
        """The request count of (`endpoint`, `status`) and the latencies of `endpoint`, made on first
        use; the hit path holds on to its own."""
        counted = self._by_status.get((endpoint, status))
        if counted is None:
            latencies = self._durations.get(endpoint)
            if latencies is None:
                latencies = self._durations[endpoint] = LatencyHistogram(self._buckets)
            counted = self._by_status[(endpoint, status)] = (Tally(), latencies)
        return counted

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "predcache_requests", "HTTP requests answered", labels=["endpoint", "status"]
        )
        for (endpoint, status), (tally, _) in sorted(self._by_status.items()):
            requests.add_metric([endpoint, str(status)], tally.value, created=tally.created)
        yield requests
        name = "predcache_request_duration_seconds"
        durations = HistogramMetricFamily(name, "time to answer a request", labels=["endpoint"])
        for endpoint, histogram in sorted(self._durations.items()):
            durations.add_metric([endpoint], histogram.cumulative(), histogram.sum)
            durations.samples.append(Sample(f"{name}_created", {"endpoint": endpoint}, histogram.created))
        yield durations
        lookups = CounterMetricFamily("predcache_cache_lookups", "cache lookups by result", labels=["result"])
        for result, tally in self.lookups.items():
            lookups.add_metric([result], tally.value, created=tally.created)
        yield lookups
