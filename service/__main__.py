"""`python -m service`: read the settings, load the model, serve until SIGTERM or SIGINT."""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, Sequence

from aiohttp import web

from service.app import create_app
from service.config import Settings
from service.errors import ConfigError
from service.model import build_predictor


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    try:
        settings = Settings.from_args(argv, environ)
        # Load the model before listening, so a bad MODEL is a one-line error, not a failed startup.
        model = build_predictor(settings)
    except ConfigError as exc:
        print(f"predcache: error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency everywhere but Windows
        loop_factory = None
    else:
        loop_factory = uvloop.new_event_loop
    web.run_app(
        create_app(settings, model=model),
        host=settings.host,
        port=settings.port,
        access_log=logging.getLogger("aiohttp.access") if settings.access_log else None,
        # In-flight requests finish within the model timeout; then the process exits.
        shutdown_timeout=settings.model_timeout_s + 1.0,
        print=lambda line: logging.getLogger("service").info("%s", line.strip()),
        loop=loop_factory() if loop_factory else None,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
