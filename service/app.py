"""The application factory and one cleanup context per resource it owns."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor

from aiohttp import web
from redis.asyncio import Redis

from service import keys
from service.breaker import CircuitBreaker
from service.cache import CacheBackend, MemoryBackend, RedisBackend, create_redis_client
from service.config import Settings, redact_url
from service.events import Events
from service.handlers import add_routes
from service.lease import Leases
from service.metrics import Metrics
from service.middleware import errors_and_metrics
from service.model import ModelRunner, Predictor, build_predictor
from service.predictions import Fleet, Predictions

log = logging.getLogger("service")

Context = Callable[[web.Application], AsyncIterator[None]]


def create_app(
    settings: Settings, *, redis: Redis | None = None, model: Predictor | None = None
) -> web.Application:
    """The service. `redis` and `model` replace the ones the settings name (tests, embedding)."""
    app = web.Application(
        middlewares=[errors_and_metrics],
        # aiohttp answers request lines over 8 KiB itself, in plain text; up to 32 KiB they reach
        # our handlers and get the same JSON 400 as every other bad input.
        handler_args={"max_line_size": 32 * 1024},
    )
    app[keys.SETTINGS] = settings
    app[keys.METRICS] = Metrics()
    app.cleanup_ctx.append(cache_context(settings, redis))
    app.cleanup_ctx.append(predictions_context(settings, model))
    add_routes(app)
    return app


def cache_context(settings: Settings, redis: Redis | None) -> Context:
    async def context(app: web.Application) -> AsyncIterator[None]:
        cache: CacheBackend | None
        if not settings.cache_enabled:
            log.info("cache disabled: every request calls the model")
            cache = None
        elif redis is None and settings.redis_url is None:
            log.info(
                "no REDIS_URL: embedded in-process cache of at most %d entries", settings.cache_max_entries
            )
            cache = MemoryBackend(settings.cache_max_entries)
        else:
            cache = await _redis_backend(settings, redis, app[keys.METRICS])
        app[keys.CACHE] = cache
        yield
        if cache is not None:
            await cache.close()

    return context


async def _redis_backend(settings: Settings, redis: Redis | None, metrics: Metrics) -> RedisBackend:
    owns_client = redis is None
    if redis is None:
        assert settings.redis_url is not None
        redis = create_redis_client(
            settings.redis_url,
            timeout_s=settings.redis_timeout_s,
            max_connections=settings.redis_max_connections,
        )
    where = redact_url(settings.redis_url) if settings.redis_url else "the given client"
    try:
        async with asyncio.timeout(settings.redis_timeout_s * 4):
            await redis.ping()
        log.info("cache: Redis at %s", where)
    except Exception as exc:
        # The service starts anyway: requests are answered by the model until Redis answers.
        log.warning(
            "cache: Redis at %s is not answering (%s); serving without cache until it does",
            where,
            type(exc).__name__,
        )
    breaker = CircuitBreaker(cooldown_s=settings.breaker_cooldown_s)
    return RedisBackend(
        redis, metrics=metrics, timeout_s=settings.redis_timeout_s, breaker=breaker, owns_client=owns_client
    )


def predictions_context(settings: Settings, model: Predictor | None) -> Context:
    async def context(app: web.Application) -> AsyncIterator[None]:
        predictor = model if model is not None else build_predictor(settings)
        # Not a `with` block: its exit waits for model threads, and a hung synchronous model would
        # then hold up shutdown for ever. Threads still busy at exit are abandoned (see __main__).
        executor = ThreadPoolExecutor(settings.model_threads, thread_name_prefix="model")
        runner = ModelRunner(predictor, timeout_s=settings.model_timeout_s, executor=executor)
        cache = app[keys.CACHE]
        fleet = None
        if isinstance(cache, RedisBackend):
            # Replicas sharing this Redis share model calls too: leases plus "stored" events.
            fleet = Fleet(
                Leases(cache, lease_ttl_s=settings.lease_ttl_s),
                Events(cache, channel=f"predcache:{runner.version}:events"),
            )
            fleet.events.start()
        predictions = Predictions(
            runner=runner,
            cache=cache,
            metrics=app[keys.METRICS],
            ttl_s=settings.ttl_s,
            grace_s=settings.grace_s,
            xfetch_beta=settings.xfetch_beta,
            near_ttl_s=settings.near_ttl_s,
            near_max_entries=settings.cache_max_entries,
            lease_ttl_s=settings.lease_ttl_s,
            fleet=fleet,
        )
        app[keys.PREDICTIONS] = predictions
        log.info("model %s loaded (%s)", runner.version, settings.model)
        yield
        await predictions.close()
        if fleet is not None:
            await fleet.events.close()
        executor.shutdown(wait=False, cancel_futures=True)

    return context
