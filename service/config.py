"""Settings of the service: flags win over environment variables, which win over defaults."""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from service.errors import ConfigError
from service.topology import parse_redis_url

DEMO_MODEL = "service.demo:DemoModel"


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    redis_url: str | None = None
    cache_enabled: bool = True
    ttl_s: float = 5.0
    stale_s: float | None = None  # None: equal to ttl_s
    xfetch_beta: float = 1.0
    lease_ttl_s: float = 2.0
    admin_token: str | None = None
    near_ttl_s: float = 1.0
    near_max_bytes: int = 64 * 1024 * 1024
    cache_max_entries: int = 10_000
    cache_max_entry_bytes: int = 1024 * 1024
    max_body_bytes: int = 64 * 1024
    model: str = DEMO_MODEL
    model_timeout_s: float = 10.0
    model_threads: int = 4
    model_max_concurrency: int | None = None  # None: 1 for a batch model, model_threads for a sync one
    model_queue_max: int = 1000
    batch_wait_ms: float = 2.0
    max_batch_size: int = 32
    max_batch_items: int = 1000
    demo_model_latency_s: float = 1.0
    demo_model_item_latency_s: float = 0.001
    # Upstream mode (MODEL=http://...): see service/upstream.py.
    model_version: str | None = None
    upstream_version_header: str | None = None
    input_schema: str | None = None  # path of a JSON Schema file
    upstream_max_connections: int = 100
    redis_timeout_s: float = 0.25
    redis_max_connections: int = 64
    breaker_cooldown_s: float = 1.0
    log_level: str = "INFO"
    access_log: bool = False
    workers: int = 1

    @classmethod
    def from_args(
        cls, argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
    ) -> Settings:
        """Read the settings from `argv` and `environ`; raise ConfigError naming a bad one."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for option in OPTIONS:
            raw = environ.get(option.env)
            if raw is not None and raw != "":
                values[option.field] = option.convert(option.env, raw)
        parsed = build_parser().parse_args(argv)
        for option in OPTIONS:
            raw = getattr(parsed, option.field)
            if raw is None:
                continue
            if option.is_switch:
                values[option.field] = option.switch_value
            else:
                values[option.field] = option.convert(option.flag, raw)
        return replace(cls(), **values)

    @property
    def grace_s(self) -> float:
        """Seconds past the TTL a prediction may still be served while it is refreshed."""
        return self.ttl_s if self.stale_s is None else self.stale_s

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        return cls.from_args([], environ)


# -- converters: each takes the setting's name (for the message) and the raw text --------------------


def _float(name: str, raw: str, *, minimum: float, inclusive: bool) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(name, f"expected a number, got {raw!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise ConfigError(name, f"expected a finite number, got {raw!r}")
    if value < minimum or (value == minimum and not inclusive):
        bound = ">=" if inclusive else ">"
        raise ConfigError(name, f"must be {bound} {minimum:g}, got {raw!r}")
    return value


def positive_float(name: str, raw: str) -> float:
    return _float(name, raw, minimum=0.0, inclusive=False)


def non_negative_float(name: str, raw: str) -> float:
    return _float(name, raw, minimum=0.0, inclusive=True)


def _int_between(low: int, high: int) -> Callable[[str, str], int]:
    def convert(name: str, raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(name, f"expected a whole number, got {raw!r}") from None
        if not low <= value <= high:
            raise ConfigError(name, f"must be between {low} and {high}, got {raw!r}")
        return value

    return convert


def boolean(name: str, raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ConfigError(name, f"expected 1/0, true/false, yes/no or on/off, got {raw!r}")


def redis_url(name: str, raw: str) -> str:
    try:
        parse_redis_url(raw)
    except ValueError as exc:
        # The URL may carry a password: say what is wrong without echoing it.
        raise ConfigError(name, f"{exc}, got {redact_url(raw)!r}") from None
    return raw


def model_spec(name: str, raw: str) -> str:
    if raw.startswith(("http://", "https://")):
        if not urlsplit(raw).hostname:
            raise ConfigError(name, f"expected http://HOST[:PORT]/PATH, got {redact_url(raw)!r}")
        return raw
    if not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", raw):
        raise ConfigError(name, f"expected package.module:attribute or an http(s):// URL, got {raw!r}")
    return raw


def log_level(name: str, raw: str) -> str:
    level = raw.strip().upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ConfigError(name, f"expected DEBUG, INFO, WARNING, ERROR or CRITICAL, got {raw!r}")
    return level


def non_empty(name: str, raw: str) -> str:
    if not raw.strip():
        raise ConfigError(name, "must not be empty")
    return raw.strip()


def redact_url(url: str) -> str:
    """The URL with any password replaced by `***`, for logs and messages. Works on node lists
    (`redis+cluster://:pw@h1:1,h2:2`) too, whose netloc urlsplit cannot parse into host and port."""
    parts = urlsplit(url)
    userinfo, at, hosts = parts.netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    user = userinfo.partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{hosts}"))


# -- the option table: one row a setting, shared by --help, flags and environment --------------------


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
    Option("port", "--port", "PORT", _int_between(0, 65535), "port to listen on"),
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
        _int_between(0, 1 << 40),
        "bytes of predictions a replica keeps in process (near-cache and its copies for when Redis is "
        "down); the oldest go first",
    ),
    Option(
        "cache_max_entries",
        "--cache-max-entries",
        "CACHE_MAX_ENTRIES",
        _int_between(1, 10_000_000),
        "entries the embedded cache keeps (least recently used go first)",
    ),
    Option(
        "cache_max_entry_bytes",
        "--cache-max-entry-bytes",
        "CACHE_MAX_ENTRY_BYTES",
        _int_between(1024, 512 * 1024 * 1024),
        "largest cache entry (metadata + response body); a larger prediction is served but not cached",
    ),
    Option(
        "max_body_bytes",
        "--max-body-bytes",
        "MAX_BODY_BYTES",
        _int_between(1024, 64 * 1024 * 1024),
        "largest request body POST /predict accepts; larger bodies get 413",
    ),
    Option(
        "model",
        "--model",
        "MODEL",
        model_spec,
        "the model as package.module:attribute, or the http(s):// URL of a model server to POST "
        "each miss's JSON to (upstream mode)",
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
        _int_between(1, 256),
        "threads that run a synchronous model's predict",
    ),
    Option(
        "model_max_concurrency",
        "--model-max-concurrency",
        "MODEL_MAX_CONCURRENCY",
        _int_between(1, 100_000),
        "model calls in flight at once; unset: 1 for a model with predict_batch, MODEL_THREADS for a "
        "synchronous one, MODEL_QUEUE_MAX for an asynchronous one",
    ),
    Option(
        "model_queue_max",
        "--model-queue-max",
        "MODEL_QUEUE_MAX",
        _int_between(1, 10_000_000),
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
        _int_between(1, 100_000),
        "for a model with predict_batch: most predictions in one call",
    ),
    Option(
        "max_batch_items",
        "--max-batch-items",
        "MAX_BATCH_ITEMS",
        _int_between(1, 100_000),
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
        _int_between(1, 10_000),
        "upstream mode: connections open to the upstream at most (one pool)",
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
        _int_between(1, 10_000),
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
        _int_between(1, 256),
        "serving processes sharing the port (SO_REUSEPORT); each has its own in-process caches",
    ),
)
assert {o.field for o in OPTIONS} == {f.name for f in fields(Settings)}, "every setting needs an option"


class _OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit status 2, as for a bad setting."""

    def error(self, message: str) -> Any:
        raise ConfigError("usage", message)


def build_parser() -> argparse.ArgumentParser:
    defaults = Settings()
    parser = _OneLineParser(
        prog="python -m service",
        description="predcache: a prediction cache in front of a slow model. Flags win over environment.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    for option in OPTIONS:
        default = getattr(defaults, option.field)
        shown = "unset" if default is None else default
        text = f"{option.help} [env {option.env}, default {shown}]"
        if option.is_switch:
            parser.add_argument(option.flag, dest=option.field, action="store_const", const=True, help=text)
        else:
            parser.add_argument(option.flag, dest=option.field, metavar=option.env, help=text)
    return parser
