"""Every setting as one row (its flag, environment variable, converter and help), shared by
`--help`, the flags and the environment."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from service.settings.converters import (
    boolean,
    byte_size,
    int_between,
    log_level,
    model_spec,
    non_empty,
    non_negative_float,
    positive_float,
    redis_url,
    token_list,
)


@dataclass(frozen=True, slots=True)
class Option:
    field: str
    flag: str
    env: str
    convert: Callable[[str, str], Any]
    help: str
    # A switch is a flag without a value (--no-cache); its environment variable still takes one.
    is_switch: bool = False
    switch_value: bool = True


OPTIONS: tuple[Option, ...] = (
    Option("host", "--host", "HOST", non_empty, "address to listen on"),
    Option("port", "--port", "PORT", int_between(0, 65535), "port to listen on"),
    Option(
        "redis_url",
        "--redis-url",
        "REDIS_URL",
        redis_url,
        "Redis to cache in, password in the URL: redis://HOST:PORT/DB (rediss:// for TLS, or "
        "unix://); a Redis Cluster: redis+cluster://HOST:PORT[,HOST:PORT...] (any nodes); Sentinel: "
        "redis+sentinel://HOST:PORT[,HOST:PORT...]/MASTER_NAME[/DB] (rediss+... for TLS); "
        "unset: an embedded in-process cache",
    ),
    Option(
        "cache_enabled",
        "--no-cache",
        "CACHE_ENABLED",
        boolean,
        "call the model for every request, the no-cache baseline (CACHE_ENABLED=0)",
        is_switch=True,
        switch_value=False,
    ),
    Option(
        "ttl_s", "--ttl", "CACHE_TTL_SECONDS", positive_float, "seconds a prediction is served from cache"
    ),
    Option(
        "stale_s",
        "--stale-seconds",
        "CACHE_STALE_SECONDS",
        non_negative_float,
        "seconds past the TTL a prediction is still served (X-Cache: STALE) while one background "
        "refresh recomputes it; 0 turns it off; unset: equal to the TTL",
    ),
    Option(
        "xfetch_beta",
        "--early-refresh-beta",
        "CACHE_EARLY_REFRESH_BETA",
        non_negative_float,
        "eagerness of probabilistic early refresh before expiry (XFetch beta); 0 turns it off",
    ),
    Option(
        "lease_ttl_s",
        "--lease-ttl",
        "LEASE_TTL_SECONDS",
        positive_float,
        "fleet-wide single-flight: lifetime of a replica's Redis lease on a key, renewed while its "
        "model runs; a replica that dies holds the others up at most this long",
    ),
    Option(
        "admin_token",
        "--admin-token",
        "ADMIN_TOKEN",
        non_empty,
        "bearer token for DELETE /cache and DELETE /cache/{pair}; unset: those endpoints are off",
    ),
    Option(
        "near_ttl_s",
        "--near-cache-seconds",
        "NEAR_CACHE_SECONDS",
        non_negative_float,
        "seconds a replica trusts its in-process copy of a prediction before asking Redis again "
        "(freshness rules still apply; invalidations reach it by pub/sub; while Redis is down the copy "
        "lives by the prediction's own TTL and grace); 0: always ask",
    ),
    Option(
        "near_max_bytes",
        "--near-cache-max-bytes",
        "NEAR_CACHE_MAX_BYTES",
        byte_size(0, 1 << 40),
        "memory a replica's copies of predictions may take (near-cache and its copies for when Redis is "
        "down), bodies, bookkeeping and all, e.g. 64MiB; the oldest go first",
    ),
    Option(
        "cache_max_entries",
        "--cache-max-entries",
        "CACHE_MAX_ENTRIES",
        int_between(1, 10_000_000),
        "entries the embedded cache keeps, and the near-cache at most (least recently used go first)",
    ),
    Option(
        "cache_max_bytes",
        "--cache-max-bytes",
        "CACHE_MAX_BYTES",
        byte_size(64 * 1024, 1 << 40),
        "memory the embedded cache may take, bodies, bookkeeping and its decoded copies of recent hits "
        "(at most an eighth of it) included, e.g. 256MiB; the least recently used go first",
    ),
    Option(
        "cache_max_entry_bytes",
        "--cache-max-entry-bytes",
        "CACHE_MAX_ENTRY_BYTES",
        int_between(1024, 512 * 1024 * 1024),
        "largest cache entry (metadata + response body); a larger prediction is served but not cached",
    ),
    Option(
        "max_body_bytes",
        "--max-body-bytes",
        "MAX_BODY_BYTES",
        int_between(1024, 64 * 1024 * 1024),
        "largest request body POST /predict accepts; larger bodies get 413",
    ),
    Option(
        "model",
        "--model",
        "MODEL",
        model_spec,
        "the model as package.module:attribute, the http(s):// URL of a model server to POST "
        "each miss's JSON to (upstream mode), or openai+http(s)://HOST:PORT/v1, an OpenAI-compatible "
        "LLM server to serve the OpenAI API under /v1/ in front of (the LLM gateway)",
    ),
    Option(
        "model_timeout_s",
        "--model-timeout",
        "MODEL_TIMEOUT_SECONDS",
        positive_float,
        "seconds a model call may take before its waiters get 504",
    ),
    Option(
        "model_threads",
        "--model-threads",
        "MODEL_THREADS",
        int_between(1, 256),
        "threads that run a synchronous model's predict",
    ),
    Option(
        "model_max_concurrency",
        "--model-max-concurrency",
        "MODEL_MAX_CONCURRENCY",
        int_between(1, 100_000),
        "model calls in flight at once; unset: 1 for a model with predict_batch, MODEL_THREADS for a "
        "synchronous one, MODEL_QUEUE_MAX for an asynchronous one",
    ),
    Option(
        "model_queue_max",
        "--model-queue-max",
        "MODEL_QUEUE_MAX",
        int_between(1, 10_000_000),
        "predictions waiting for the model; a miss past it gets 503 overloaded with Retry-After",
    ),
    Option(
        "batch_wait_ms",
        "--batch-wait-ms",
        "BATCH_WAIT_MS",
        non_negative_float,
        "for a model with predict_batch: how long a miss waits for others to share its call",
    ),
    Option(
        "max_batch_size",
        "--max-batch-size",
        "MAX_BATCH_SIZE",
        int_between(1, 100_000),
        "for a model with predict_batch: most predictions in one call",
    ),
    Option(
        "max_batch_items",
        "--max-batch-items",
        "MAX_BATCH_ITEMS",
        int_between(1, 100_000),
        "most inputs in one POST /predict/batch",
    ),
    Option(
        "demo_model_item_latency_s",
        "--demo-model-item-latency",
        "DEMO_MODEL_ITEM_LATENCY_SECONDS",
        non_negative_float,
        "seconds the demo model's predict_batch adds per prediction",
    ),
    Option(
        "demo_model_latency_s",
        "--demo-model-latency",
        "DEMO_MODEL_LATENCY_SECONDS",
        non_negative_float,
        "seconds the demo model takes per call",
    ),
    Option(
        "model_version",
        "--model-version",
        "MODEL_VERSION",
        non_empty,
        "upstream mode (required there): the upstream model's version, part of every cache key",
    ),
    Option(
        "upstream_version_header",
        "--upstream-version-header",
        "UPSTREAM_VERSION_HEADER",
        non_empty,
        "upstream mode: a response header naming the version the upstream answered with; an answer "
        "whose header is not MODEL_VERSION is served but not cached",
    ),
    Option(
        "input_schema",
        "--input-schema",
        "INPUT_SCHEMA",
        non_empty,
        "upstream mode: a JSON Schema file that requests must match before they reach the upstream "
        "(and that /openapi.json publishes); unset: any JSON object",
    ),
    Option(
        "upstream_max_connections",
        "--upstream-max-connections",
        "UPSTREAM_MAX_CONNECTIONS",
        int_between(1, 10_000),
        "upstream mode: connections open to the upstream at most (one pool)",
    ),
    Option(
        "cache_scope_secret",
        "--cache-scope-secret",
        "CACHE_SCOPE_SECRET",
        non_empty,
        "LLM gateway (required there unless UPSTREAM_API_KEY is set): the secret, the same on every "
        "replica, under which an HMAC of each client's Authorization scopes its cache entries",
    ),
    Option(
        "upstream_api_key",
        "--upstream-api-key",
        "UPSTREAM_API_KEY",
        non_empty,
        "LLM gateway: send this key upstream instead of each client's Authorization; every client "
        "then shares one cache (see GATEWAY_API_KEYS)",
    ),
    Option(
        "gateway_api_keys",
        "--gateway-api-keys",
        "GATEWAY_API_KEYS",
        token_list,
        "LLM gateway with UPSTREAM_API_KEY: comma-separated bearer tokens clients must send; unset: "
        "anyone may use the gateway (a warning at startup says so)",
    ),
    Option(
        "cache_sampled",
        "--no-cache-sampled",
        "CACHE_SAMPLED",
        boolean,
        "LLM gateway: do not cache sampled requests (temperature > 0 and no seed): each gets its own "
        "generation (CACHE_SAMPLED=0)",
        is_switch=True,
        switch_value=False,
    ),
    Option(
        "upstream_max_response_bytes",
        "--upstream-max-response-bytes",
        "UPSTREAM_MAX_RESPONSE_BYTES",
        int_between(1024, 1 << 34),
        "upstream mode and LLM gateway: most bytes read from one upstream answer or stream, checked "
        "while reading; past it a model server's answer is a 502 and its connection is dropped (its "
        "error bodies: 64 KiB at most), the gateway's fails (503, nothing stored); unset: 4 MiB for a "
        "model server, 32 MiB for the gateway",
    ),
    Option(
        "stream_readers",
        "--stream-readers",
        "STREAM_READERS",
        int_between(1, 1000),
        "LLM gateway over Redis: generations of other replicas this one follows live at once, each on "
        "a Redis connection of its own; a streamed request joining one more waits for its end",
    ),
    Option(
        "redis_timeout_s",
        "--redis-timeout",
        "REDIS_TIMEOUT_SECONDS",
        positive_float,
        "budget for one Redis command, connecting included; past it the request is a miss",
    ),
    Option(
        "redis_max_connections",
        "--redis-max-connections",
        "REDIS_MAX_CONNECTIONS",
        int_between(1, 10_000),
        "size of the Redis connection pool",
    ),
    Option(
        "breaker_cooldown_s",
        "--breaker-cooldown",
        "REDIS_BREAKER_COOLDOWN_SECONDS",
        positive_float,
        "seconds without Redis after it fails, before one probe tries it again",
    ),
    Option("log_level", "--log-level", "LOG_LEVEL", log_level, "DEBUG, INFO, WARNING or ERROR"),
    Option("access_log", "--access-log", "ACCESS_LOG", boolean, "log every request", is_switch=True),
    Option(
        "workers",
        "--workers",
        "WORKERS",
        int_between(1, 256),
        "serving processes sharing the port (SO_REUSEPORT); each has its own in-process caches",
    ),
)
