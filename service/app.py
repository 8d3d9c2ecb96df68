"""The application factory and one cleanup context per resource it owns."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor

from aiohttp import web

from service.caching.backends import CacheBackend, MemoryBackend, RedisBackend
from service.caching.fleet import Fleet
from service.caching.generation import Generations
from service.caching.predictions import Predictions
from service.http import appkeys as keys
from service.http.front_page import build_front_page
from service.http.openapi import build_spec
from service.http.responses import HitHeaders
from service.http.routes import add_routes
from service.http.server import MalformedRequestLog, hide_server_version
from service.metrics import Metrics
from service.models.contract import Model, contract_for
from service.models.factory import build_model
from service.models.inputs import InputCodec
from service.models.runner import Limits, ModelRunner
from service.models.upstream import UpstreamModel
from service.openai.fanout import RemoteGenerations
from service.openai.gateway import Gateway
from service.openai.model import DEFAULT_MAX_RESPONSE_BYTES, OpenAIUpstreamModel
from service.openai.routes import GATEWAY, add_gateway_routes
from service.redis import keyspace
from service.redis.breaker import CircuitBreaker
from service.redis.events import Events
from service.redis.lease import Leases
from service.redis.streams import MAX_RELAYED_EVENTS, StreamRelay, reader_client, reader_twin
from service.redis.topology import RedisClient, create_client, mode_of
from service.settings.config import Settings
from service.settings.converters import OPENAI_SCHEME, redact_url

log = logging.getLogger("service")

Context = Callable[[web.Application], AsyncIterator[None]]

# Redis connections opened at startup (the pool opens more on demand, up to REDIS_MAX_CONNECTIONS).
WARM_CONNECTIONS = 32
# The embedded cache's decoded copies of recent hits (its near-cache) take at most this share of
# CACHE_MAX_BYTES, and its entries the rest: together they stay within it.
EMBEDDED_COPIES_SHARE = 8


def embedded_copies_bytes(settings: Settings) -> int:
    """The near-cache's byte bound beside the embedded cache."""
    return min(settings.near_max_bytes, settings.cache_max_bytes // EMBEDDED_COPIES_SHARE)


def create_app(
    settings: Settings, *, redis: RedisClient | None = None, model: Model | None = None
) -> web.Application:
    """The service. `redis` and `model` replace the ones the settings name (tests, embedding)."""
    hide_server_version()
    app = web.Application(
        handler_args={
            # aiohttp answers request lines over 8 KiB itself, in plain text; up to 32 KiB they reach
            # our handlers and get the same JSON 400 as every other bad input.
            "max_line_size": 32 * 1024,
            # Requests aiohttp cannot parse: a rate-limited WARNING line instead of a traceback each.
            "logger": MalformedRequestLog(logging.getLogger("aiohttp.server")),
        },
        # Past it, reading a POST body raises 413, which the middleware answers in JSON.
        client_max_size=settings.max_body_bytes,
    )
    app[keys.SETTINGS] = settings
    app[keys.METRICS] = Metrics()
    app.cleanup_ctx.append(cache_context(settings, redis))
    model = model_for(settings) if model is None else model
    if isinstance(model, UpstreamModel):
        # Before predictions: its HTTP client outlives every fill, and closes after them.
        app.cleanup_ctx.append(model.client_context)
    if isinstance(model, OpenAIUpstreamModel):
        app.cleanup_ctx.append(model.upstream.client_context)
    app.cleanup_ctx.append(predictions_context(settings, model))
    if isinstance(model, OpenAIUpstreamModel):
        app.cleanup_ctx.append(gateway_context(settings, model))
        # Before the app's own routes, whose catch-all would take /v1/ too.
        add_gateway_routes(app)
    add_routes(app, predict=not isinstance(model, OpenAIUpstreamModel))
    return app


def model_for(settings: Settings) -> Model:
    """The model the settings name: the LLM gateway's for MODEL=openai+..., else models' own."""
    if settings.model.startswith(OPENAI_SCHEME):
        return OpenAIUpstreamModel.from_settings(settings)
    return build_model(settings)


def gateway_context(settings: Settings, model: OpenAIUpstreamModel) -> Context:
    async def context(app: web.Application) -> AsyncIterator[None]:
        metrics = app[keys.METRICS]
        model.observe_ttft = metrics.llm.upstream_ttft.observe
        fleet = app[keys.PREDICTIONS].fleet
        if fleet is not None:
            # Streamed generations shared live with the other replicas (see openai/fanout.py).
            events = fleet.events
            model.remote = RemoteGenerations(
                model.live,
                fleet.relay,
                held=fleet.leases.held,
                remote_fills=fleet.remote_fills,
                failed=lambda key: events.deliver(f"{key}|error"),
            )
            fleet.add_remote_fill_listener(model.remote.remote_fill_started)
        app[GATEWAY] = Gateway(model, app[keys.PREDICTIONS], metrics, cache_sampled=settings.cache_sampled)
        yield
        await model.remote.close()
        await model.embeddings.close()

    return context


def cache_context(settings: Settings, redis: RedisClient | None) -> Context:
    async def context(app: web.Application) -> AsyncIterator[None]:
        cache: CacheBackend | None
        if not settings.cache_enabled:
            log.info("cache disabled: every request calls the model")
            cache = None
        elif redis is None and settings.redis_url is None:
            log.info(
                "no REDIS_URL: embedded in-process cache of at most %d entries and %d bytes",
                settings.cache_max_entries,
                settings.cache_max_bytes,
            )
            cache = MemoryBackend(
                settings.cache_max_entries,
                max_bytes=settings.cache_max_bytes - embedded_copies_bytes(settings),
            )
        else:
            cache = await _redis_backend(settings, redis, app[keys.METRICS])
        app[keys.CACHE] = cache
        yield
        if cache is not None:
            await cache.close()

    return context


async def _redis_backend(settings: Settings, redis: RedisClient | None, metrics: Metrics) -> RedisBackend:
    owns_client = redis is None
    if redis is None:
        assert settings.redis_url is not None
        redis = create_client(
            settings.redis_url,
            timeout_s=settings.redis_timeout_s,
            max_connections=settings.redis_max_connections,
        )
    where = redact_url(settings.redis_url) if settings.redis_url else "the given client"
    try:
        async with asyncio.timeout(settings.redis_timeout_s * 4):
            # Several connections at once, not one: the misses of a batch each take a lease, and
            # would otherwise wait for connections opened on demand, one after another, and reach
            # the model too far apart to share a call.
            await asyncio.gather(
                *(redis.ping() for _ in range(min(WARM_CONNECTIONS, settings.redis_max_connections)))
            )
        log.info("cache: Redis (%s) at %s", mode_of(redis), where)
    except Exception as exc:
        # The service starts anyway: requests are answered by the model until Redis answers.
        log.warning(
            "cache: Redis at %s is not answering (%s); serving without cache until it does",
            where,
            type(exc).__name__,
        )
    breaker = CircuitBreaker(cooldown_s=settings.breaker_cooldown_s)
    return RedisBackend(
        redis,
        metrics=metrics,
        timeout_s=settings.redis_timeout_s,
        breaker=breaker,
        owns_client=owns_client,
        # One connection per node stays free for the pub/sub subscription.
        max_commands=max(1, settings.redis_max_connections - 1),
    )


def predictions_context(settings: Settings, model: Model | None) -> Context:
    async def context(app: web.Application) -> AsyncIterator[None]:
        loaded = model if model is not None else build_model(settings)
        contract = contract_for(loaded)
        # Not a `with` block: its exit waits for model threads, and a hung synchronous model would
        # then hold up shutdown for ever. Threads still busy at exit are abandoned (see __main__).
        executor = ThreadPoolExecutor(settings.model_threads, thread_name_prefix="model")
        metrics = app[keys.METRICS]
        limits = Limits(
            timeout_s=settings.model_timeout_s,
            max_concurrency=settings.model_max_concurrency,
            threads=settings.model_threads,
            queue_max=settings.model_queue_max,
            batch_wait_s=settings.batch_wait_ms / 1000,
            max_batch_size=settings.max_batch_size,
        )
        runner = ModelRunner(contract, limits=limits, executor=executor, metrics=metrics)
        metrics.queue_depth.set_function(lambda: runner.admission.waiting)
        inputs = contract.inputs or InputCodec(contract.input_type, invalid=contract.invalid)
        cache = app[keys.CACHE]
        fleet = None
        if isinstance(cache, RedisBackend):
            # Replicas sharing this Redis share model calls too: leases plus "stored" events, and for
            # the LLM gateway the events of each streamed generation, relayed live.
            leases = Leases(cache, lease_ttl_s=settings.lease_ttl_s)
            events = Events(cache, channel=keyspace.events_channel(runner.version))
            relay = (
                _relay(settings, cache, leases, events) if isinstance(model, OpenAIUpstreamModel) else None
            )
            fleet = Fleet(
                leases,
                events,
                metrics=metrics,
                lease_ttl_s=settings.lease_ttl_s,
                model_timeout_s=settings.model_timeout_s,
                relay=relay,
            )
            fleet.events.start()
        generations = Generations(
            cache,
            runner.version,
            # A key's bumped counter is remembered as long as an entry computed before it could live.
            remember_s=settings.ttl_s + settings.grace_s + settings.model_timeout_s,
            max_keys=settings.cache_max_entries,
        )
        embedded = isinstance(cache, MemoryBackend)
        # Before the first request: a replica joining after a DELETE /cache must know of it.
        await generations.refresh()
        generations.start()
        predictions = Predictions(
            runner=runner,
            cache=cache,
            metrics=metrics,
            ttl_s=settings.ttl_s,
            grace_s=settings.grace_s,
            xfetch_beta=settings.xfetch_beta,
            near_ttl_s=settings.near_ttl_s,
            near_max_entries=settings.cache_max_entries,
            near_max_bytes=embedded_copies_bytes(settings) if embedded else settings.near_max_bytes,
            # Beside the embedded cache a copy is only worth keeping while it spares a decoding.
            near_keep_for_outages=not embedded,
            max_entry_bytes=settings.cache_max_entry_bytes,
            fleet=fleet,
            generations=generations,
        )
        if cache is not None:
            metrics.local_only.set_function(lambda: float(cache.state != "ok"))
        metrics.cache_memory.labels("near").set_function(lambda: predictions.near.memory_bytes)
        if isinstance(cache, MemoryBackend):
            metrics.cache_memory.labels("embedded").set_function(lambda: cache.memory_bytes)
        app[keys.INPUTS] = inputs
        app[keys.OPENAPI] = build_spec(
            inputs,
            runner.output_adapter,
            model_version=runner.version,
            admin=settings.admin_token is not None,
            max_items=settings.max_batch_items,
        )
        app[keys.FRONT_PAGE] = build_front_page(app[keys.OPENAPI], model=loaded, version=runner.version)
        app[keys.PREDICTIONS] = predictions
        app[keys.HIT_HEADERS] = HitHeaders(grace_s=settings.grace_s, clock=time.time)
        # An upstream URL may hold a password.
        log.info("model %s loaded (%s)", runner.version, redact_url(settings.model))
        yield
        await predictions.close()
        await generations.close()
        executor.shutdown(wait=False, cancel_futures=True)

    return context


def _relay(settings: Settings, cache: RedisBackend, leases: Leases, events: Events) -> StreamRelay | None:
    """The stream relay, its blocking reads on connections of their own (from REDIS_URL, or like the
    given client's); None for a given cluster or Sentinel client, whose joiners wait for the end."""
    budget_s, readers = settings.redis_timeout_s, settings.stream_readers
    if settings.redis_url is not None:
        reader: RedisClient | None = reader_client(settings.redis_url, timeout_s=budget_s, readers=readers)
    else:
        reader = reader_twin(cache.client, timeout_s=budget_s, readers=readers)
    if reader is None:
        log.info("stream relay off: a given Redis Cluster or Sentinel client (set REDIS_URL)")
        return None
    return StreamRelay(
        cache,
        leases,
        events,
        reader,
        readers=settings.stream_readers,
        # A stream lives as long as a generation can: the model timeout, plus a lease if its holder died.
        ttl_s=settings.model_timeout_s + settings.lease_ttl_s,
        max_events=MAX_RELAYED_EVENTS,
        max_bytes=settings.upstream_max_response_bytes or DEFAULT_MAX_RESPONSE_BYTES,
    )
