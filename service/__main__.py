"""`python -m service`: read the settings, load the model, serve until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import errno
import gc
import logging
import multiprocessing
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from typing import NoReturn

from aiohttp import web

from service.app import create_app, model_for
from service.errors import ConfigError
from service.http.listen import cannot_listen, check_can_listen
from service.models.contract import Model
from service.settings.config import Settings


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    try:
        settings = Settings.from_args(argv, environ)
        # Load the model before listening, so a bad MODEL is a one-line error, not a failed startup.
        model = model_for(settings)
        check_can_listen(settings.host, settings.port, reuse_port=settings.workers > 1)
    except ConfigError as exc:
        print(f"predcache: error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if settings.workers == 1:
        serve(settings, model)
    return supervise(settings, model)


def serve(settings: Settings, model: Model) -> NoReturn:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency everywhere but Windows
        loop = None
    else:
        loop = uvloop.new_event_loop()
    app = create_app(settings, model=model)
    # After the cleanup contexts: the model is loaded by then.
    app.on_startup.append(_freeze_startup_heap)
    try:
        _run_app(app, settings, loop)
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        # Taken since main() checked it (another process starting at the same time).
        print(f"predcache: error: {cannot_listen(exc, settings.host, settings.port)}", file=sys.stderr)
        logging.shutdown()
        os._exit(2)
    # Requests have drained and Redis is closed. A synchronous model call past its timeout may still
    # hold a thread, which the interpreter would join at exit; nothing is left to lose, so leave now.
    logging.shutdown()
    os._exit(0)


def _run_app(app: web.Application, settings: Settings, loop: asyncio.AbstractEventLoop | None) -> None:
    web.run_app(
        app,
        host=settings.host,
        port=settings.port,
        # Several workers share the port; the kernel spreads connections over them.
        reuse_port=settings.workers > 1 or None,
        access_log=logging.getLogger("aiohttp.access") if settings.access_log else None,
        # In-flight requests finish within the model timeout; then the process exits.
        shutdown_timeout=settings.model_timeout_s + 1.0,
        print=lambda line: logging.getLogger("service").info("%s", line.strip()),
        loop=loop,
    )


async def _freeze_startup_heap(_app: web.Application) -> None:
    """Take what startup allocated (modules, the model, its weights) out of the collector's reach.

    It lives as long as the process, yet every full collection would scan it again: a pause of the
    whole event loop that grows with the model (about 0.1 s per collection for a 200k-object heap on a
    2-core machine, seen as a latency spike on every request in flight). Frozen, a full collection
    scans only what requests allocated.
    """
    gc.collect()
    gc.freeze()


def supervise(settings: Settings, model: Model) -> int:
    """Run `settings.workers` serving processes on one port and pass SIGTERM/SIGINT on to them."""
    # Fork before any event loop exists; each worker builds its own app, pool and loop.
    context = multiprocessing.get_context("fork")
    workers = [
        context.Process(target=serve, args=(settings, model), daemon=False) for _ in range(settings.workers)
    ]
    for worker in workers:
        worker.start()

    def forward(signum: int, _frame: object) -> None:
        # Each worker shuts down gracefully on the same signal: in-flight requests finish first.
        for worker in workers:
            if worker.pid is not None and worker.is_alive():
                os.kill(worker.pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for worker in workers:
        worker.join()
    return max((worker.exitcode or 0) for worker in workers)


if __name__ == "__main__":
    raise SystemExit(main())
