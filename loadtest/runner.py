"""Sending: closed-loop workers, or an open-loop schedule with `--rate`.

Each worker sends through a `Send`: its own `http1.Connection` (the default for http://), or one
shared aiohttp session (https://, `--client aiohttp` for comparison, and LLM mode, chat.py). What
request i sends is a GET for a pair, a `POST /predict` of an input line, a `POST /predict/batch` of
several, or a chat completion of a `--prompts` line.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import NamedTuple

import aiohttp
from yarl import URL

from . import http1
from .chat import chat_senders, transport_errors
from .classes import ERROR_CLASS, BatchItem, classify, classify_batch
from .http1 import Response
from .llm import Answer
from .settings import RunSettings
from .stats import Recorder
from .workload import LinePicker

# Event-loop timers have millisecond resolution, so a worker can wake up to about a millisecond after
# a request's due time through no fault of the server. A start within this tolerance counts as on
# time and is measured from its actual start; only a later start is counted as late and measured from
# its due time (the coordinated-omission correction).
LATE_START_TOLERANCE_S = 0.001


class RequestRecord(NamedTuple):
    """One request as an observer (`--verbose`, `--csv`, `--plot`) sees it; times from the run's start."""

    intended_start_ms: float
    actual_start_ms: float
    latency_ms: float
    uncorrected_latency_ms: float
    status: int
    response_class: str
    nbytes: int
    error: str | None


RequestObserver = Callable[[RequestRecord], None]


# Sends request i (a GET to pair i modulo their number, or the input lines the run's picker gives
# it): one worker's way of sending, for the whole run.
Send = Callable[[int], Awaitable[Response]]
# Gives each worker its Send.
SenderFactory = Callable[[], Send]


async def run_load(
    settings: RunSettings,
    recorder: Recorder,
    *,
    observer: RequestObserver | None = None,
) -> float:
    """Send the warm-up requests, then the measured ones into `recorder`; return the measured seconds."""
    if settings.llm:
        opened = chat_senders
    else:
        opened = _raw_senders if settings.resolved_client == "raw" else _aiohttp_senders
    # One picker for warm-up and measurement: a Zipf run's draws go on from where warm-up left them.
    async with opened(settings, settings.line_picker()) as new_sender:
        senders = [new_sender() for _ in range(settings.concurrency)]
        if settings.warmup:
            await _send(senders, Recorder(), count=settings.warmup, batch_size=settings.batch_size)
        interval_s = 1 / settings.rate if settings.rate is not None else None
        return await _send(
            senders,
            recorder,
            batch_size=settings.batch_size,
            count=settings.planned_requests,
            duration_s=settings.duration_s,
            interval_s=interval_s,
            observer=observer,
        )


@asynccontextmanager
async def _raw_senders(settings: RunSettings, pick: LinePicker) -> AsyncIterator[SenderFactory]:
    """One `http1.Connection` per worker, all sending the run's request bytes (`_raw_requests`)."""
    base = URL(settings.url)
    host, port = base.raw_host, base.port
    if host is None or port is None:  # the CLI checks this; here for callers of run_load
        raise ValueError(f"no host in {settings.url!r}")
    request_bytes = _raw_requests(settings, pick)
    batched = settings.batch_size is not None
    connections: list[http1.Connection] = []

    def new_sender() -> Send:
        connection = http1.Connection(host, port, settings.timeout_s, keep_body=batched)
        connections.append(connection)
        request = connection.request
        return lambda i: request(request_bytes(i))

    try:
        yield new_sender
    finally:
        for connection in connections:
            connection.close()


def _raw_requests(settings: RunSettings, pick: LinePicker) -> Callable[[int], bytes]:
    """The bytes of request i: built once per pair URL or input line, or per request for a batch."""
    if not settings.inputs:
        gets = [http1.build_request(url) for url in settings.request_urls()]
        n_urls = len(gets)
        return lambda i: gets[i % n_urls]
    url = settings.post_url
    if settings.batch_size is None:
        posts = [http1.build_request(url, body) for body in settings.inputs]
        return lambda i: posts[pick(i)]
    body = settings.batch_bodies(pick)
    build = http1.build_request
    return lambda i: build(url, body(i))


@asynccontextmanager
async def _aiohttp_senders(settings: RunSettings, pick: LinePicker) -> AsyncIterator[SenderFactory]:
    """Every worker sends through one aiohttp session with a pool of `concurrency` connections."""
    connector = aiohttp.TCPConnector(limit=settings.concurrency, limit_per_host=0)
    keep_body = settings.batch_size is not None
    target = _aiohttp_targets(settings, pick)
    json_headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=settings.timeout_s),
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
    ) as session:
        request = session.request

        async def send(i: int) -> Response:
            url, data = target(i)
            with transport_errors():
                if data is None:
                    context = request("GET", url)
                else:
                    context = request("POST", url, data=data, headers=json_headers)
                async with context as response:
                    body = await response.read()
            headers = response.headers
            return Response(
                response.status,
                len(body),
                headers.get("X-Cache"),
                headers.get("Cache-Status"),
                body if keep_body else None,
            )

        yield lambda: send


def _aiohttp_targets(settings: RunSettings, pick: LinePicker) -> Callable[[int], tuple[URL, bytes | None]]:
    """Request i's URL and body (None: a GET)."""
    if not settings.inputs:
        urls = settings.request_urls()
        n_urls = len(urls)
        return lambda i: (urls[i % n_urls], None)
    url = settings.post_url
    if settings.batch_size is None:
        inputs = settings.inputs
        return lambda i: (url, inputs[pick(i)])
    body = settings.batch_bodies(pick)
    return lambda i: (url, body(i))


async def _send(
    senders: list[Send],
    recorder: Recorder,
    *,
    count: int | None,
    batch_size: int | None = None,
    duration_s: float | None = None,
    interval_s: float | None = None,
    observer: RequestObserver | None = None,
) -> float:
    """Run one worker per sender, all sharing one sequence of request indices; return elapsed seconds.

    Closed loop (`interval_s` None): a worker sends its next request as soon as the previous one is
    answered, until `count` requests or `duration_s` have passed. Open loop: request i is due at
    t0 + i * interval_s; a worker sleeps until its request is due, or sends at once if it is behind.
    A batch request (`batch_size`) is recorded as its items, each with the request's latency.
    """
    indices = itertools.count()
    record = recorder.record
    record_error = recorder.record_error
    clock = time.perf_counter
    sleep = asyncio.sleep
    t0 = clock()
    deadline = t0 + duration_s if duration_s is not None and interval_s is None else None

    async def worker(send: Send) -> None:
        for i in indices:
            if count is not None and i >= count:
                return
            if interval_s is None:
                start = due = clock()
                if deadline is not None and start >= deadline:
                    return
            else:
                due = t0 + i * interval_s
                now = clock()
                if due > now:
                    await sleep(due - now)
                    now = clock()
                start = now
            status = nbytes = 0
            error: str | None = None
            response_class = ERROR_CLASS
            body: bytes | None = None
            answer: Answer | None = None
            try:
                status, nbytes, x_cache, cache_status, body, answer = await send(i)
                if status >= 400:
                    error = f"HTTP {status}"
                elif answer is not None and (answer.error is not None or not answer.done):
                    # A broken stream is no answer: counted as an error, its tokens left out.
                    error = answer.error or "incomplete stream"
                elif batch_size is None:
                    response_class = classify(x_cache, cache_status)
            except TimeoutError:
                error = "timeout"
            except http1.ClientError as exc:
                error = exc.kind
            except (aiohttp.ClientError, OSError) as exc:
                error = type(exc).__name__
            end = clock()
            uncorrected_us = int((end - start) * 1_000_000)
            late_s = start - due
            if late_s > LATE_START_TOLERANCE_S:
                recorder.late_starts += 1
                latency_us = int((end - due) * 1_000_000)
            else:
                late_s = 0.0
                latency_us = uncorrected_us
            if batch_size is not None:
                items: list[BatchItem] = (
                    [(status, ERROR_CLASS, error)] * batch_size
                    if error is not None
                    else classify_batch(status, body, batch_size)
                )
                recorder.record_batch(items, nbytes, latency_us, uncorrected_us)
                if observer is not None:
                    times = _record_times(t0, due, start, latency_us, uncorrected_us)
                    for item_status, item_class, item_error in items:
                        observer(RequestRecord(*times, item_status, item_class, nbytes, item_error))
                        nbytes = 0  # the body's bytes count once, with the first item
                continue
            if error is None:
                record(response_class, status, nbytes, latency_us, uncorrected_us)
                if answer is not None:
                    recorder.record_answer(response_class, answer, late_s)
            else:
                record_error(error, status, nbytes, latency_us, uncorrected_us)
            if observer is not None:
                times = _record_times(t0, due, start, latency_us, uncorrected_us)
                observer(RequestRecord(*times, status, response_class, nbytes, error))

    await asyncio.gather(*(worker(send) for send in senders))
    return clock() - t0


def _record_times(
    t0: float, due: float, start: float, latency_us: int, uncorrected_us: int
) -> tuple[float, float, float, float]:
    """A RequestRecord's times: when it was due and sent (ms into the run), and its latencies (ms)."""
    return (due - t0) * 1000, (start - t0) * 1000, latency_us / 1000, uncorrected_us / 1000
