"""Settings of the service: flags win over environment variables, which win over defaults."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

from service.errors import ConfigError
from service.settings.options import OPTIONS

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
    cache_max_bytes: int = 256 * 1024 * 1024
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
    # The LLM gateway (MODEL=openai+http://...): see service/openai/. Secrets stay out of reprs.
    cache_scope_secret: str | None = field(default=None, repr=False)
    upstream_api_key: str | None = field(default=None, repr=False)
    gateway_api_keys: tuple[str, ...] = field(default=(), repr=False)
    cache_sampled: bool = True
    # None: each kind of upstream's own default (4 MiB for a model server, 32 MiB for the gateway).
    upstream_max_response_bytes: int | None = None
    stream_readers: int = 16
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
        shown = "unset" if default is None or default == () else default
        text = f"{option.help} [env {option.env}, default {shown}]"
        if option.is_switch:
            parser.add_argument(option.flag, dest=option.field, action="store_const", const=True, help=text)
        else:
            parser.add_argument(option.flag, dest=option.field, metavar=option.env, help=text)
    return parser
