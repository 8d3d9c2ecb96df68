"""Prometheus metrics of one service instance, on a registry of its own so apps never share counters.

What every request counts (requests, their latency, cache lookups) is kept as plain numbers and turned
into Prometheus samples only when /metrics is scraped: prometheus-client's own counters and histograms
take a lock and, for labels, build a key on every update, a few microseconds per request, which on the
hit path is a tenth of its cost. The event loop is the only writer, so plain integers suffice, and a
custom collector (prometheus-client's API for exactly this) reads them at scrape time.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

__all__ = ["CONTENT_TYPE_LATEST", "LatencyHistogram", "LlmMetrics", "Metrics", "RequestMetrics", "Tally"]

_LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    """The counters, gauges and histograms of one service instance."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        # Counted on every request, hits included: plain numbers, read at scrape time.
        self.http = RequestMetrics(_LATENCY_BUCKETS_S)
        r.register(self.http)
        self.cache_hit = self.http.lookups["hit"]
        self.cache_miss = self.http.lookups["miss"]
        self.cache_stale = self.http.lookups["stale"]
        self.cache_error = self.http.lookups["error"]
        self.cache_writes = Counter("predcache_cache_writes", "predictions stored in the cache", registry=r)
        self.cache_write_errors = Counter(
            "predcache_cache_write_errors",
            "cache writes that failed (the request was still served)",
            registry=r,
        )
        write_backs = Counter(
            "predcache_cache_write_backs",
            "predictions computed while Redis could not store them, written back once it answered"
            " (result=written), or not, a newer entry being there (result=newer_kept)",
            ["result"],
            registry=r,
        )
        self.write_backs_written = write_backs.labels("written")
        self.write_backs_newer_kept = write_backs.labels("newer_kept")
        self.cache_oversized = Counter(
            "predcache_cache_oversized",
            "predictions served but not cached: larger than CACHE_MAX_ENTRY_BYTES",
            registry=r,
        )
        self.local_answers = Counter(
            "predcache_local_cache_answers",
            "lookups answered from the replica's own copy: the cache was unreachable or had lost the entry",
            registry=r,
        )
        # Set by the app to read the cache's state at scrape time.
        self.local_only = Gauge(
            "predcache_local_cache_only",
            "1 while the shared cache cannot be reached and the replica answers from its own copies",
            registry=r,
        )
        # Set by the app to read the in-process caches' bytes at scrape time.
        self.cache_memory = Gauge(
            "predcache_cache_memory_bytes",
            "memory the in-process caches take, as their byte bounds count it: cache=near "
            "(NEAR_CACHE_MAX_BYTES), cache=embedded (with near, within CACHE_MAX_BYTES)",
            ["cache"],
            registry=r,
        )
        self.cache_refusals = Counter(
            "predcache_redis_refusals",
            "Redis commands refused by a reachable Redis (OOM, READONLY)",
            registry=r,
        )
        self.breaker_opened = Counter(
            "predcache_redis_breaker_opened", "times the Redis circuit breaker opened", registry=r
        )
        self.model_calls = Counter("predcache_model_calls", "calls to the model", registry=r)
        self.model_errors = Counter(
            "predcache_model_errors", "model calls that failed or timed out", registry=r
        )
        self.model_items = Counter(
            "predcache_model_items",
            "predictions computed by the model (a batch call computes several)",
            registry=r,
        )
        self.batch_size = Histogram(
            "predcache_model_batch_size",
            "predictions per predict_batch call",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=r,
        )
        self.queue_wait = Histogram(
            "predcache_model_queue_wait_seconds",
            "time a prediction waited for a model call slot",
            buckets=_LATENCY_BUCKETS_S,
            registry=r,
        )
        # Set by the app to read the admission queue at scrape time.
        self.queue_depth = Gauge(
            "predcache_model_queue_depth", "predictions waiting for the model", registry=r
        )
        self.overloaded = Counter(
            "predcache_model_overloaded",
            "misses refused with 503 overloaded: the model's queue was full",
            registry=r,
        )
        self.model_duration = Histogram(
            "predcache_model_duration_seconds",
            "time the model took per call",
            buckets=_LATENCY_BUCKETS_S,
            registry=r,
        )
        self.background_refreshes = Counter(
            "predcache_background_refreshes", "refreshes started by serving a stale prediction", registry=r
        )
        self.early_refreshes = Counter(
            "predcache_early_refreshes",
            "refreshes started before expiry (probabilistic early refresh)",
            registry=r,
        )
        self.lease_waits = Counter(
            "predcache_lease_waits", "fills that waited for another replica's model call", registry=r
        )
        self.lease_timeouts = Counter(
            "predcache_lease_timeouts",
            "fills that gave up waiting for another replica and computed",
            registry=r,
        )
        self.lease_fallbacks = Counter(
            "predcache_lease_fallbacks", "fills without a lease because Redis was unreachable", registry=r
        )
        self.coalesced = Counter(
            "predcache_singleflight_coalesced",
            "requests that joined a model call already in flight instead of starting one",
            registry=r,
        )
        # Exported in every mode (zero outside the gateway), so the dashboard's panels always resolve.
        self.llm = LlmMetrics(r)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class LlmMetrics:
    """The OpenAI gateway's (MODEL=openai+...): requests by route and cache result, tokens the cache
    answered instead of the upstream, and the upstream's time to first token."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "predcache_llm_requests",
            "OpenAI API requests by route and X-Cache (HIT, STALE, MISS, BYPASS; ERROR for errors)",
            ["route", "cache"],
            registry=registry,
        )
        cached_tokens = Counter(
            "predcache_llm_cached_tokens",
            "tokens served from the cache instead of generated upstream, by kind (prompt, completion), "
            "from the stored answer's usage",
            ["kind"],
            registry=registry,
        )
        self.cached_prompt_tokens = cached_tokens.labels("prompt")
        self.cached_completion_tokens = cached_tokens.labels("completion")
        self.upstream_ttft = Histogram(
            "predcache_llm_upstream_ttft_seconds",
            "time from sending a streamed generation upstream to its first event",
            buckets=_LATENCY_BUCKETS_S,
            registry=registry,
        )


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
