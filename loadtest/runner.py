"""Sending: closed-loop workers, or an open-loop schedule with `--rate`, over one aiohttp session."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import aiohttp
from yarl import URL

from .stats import ERROR_CLASS, Recorder, classify

# Event-loop timers have millisecond resolution, so a worker can wake up to about a millisecond after
# a request's due time through no fault of the server. A start within this tolerance counts as on
# time and is measured from its actual start; only a later start is counted as late and measured from
# its due time (the coordinated-omission correction).
LATE_START_TOLERANCE_S = 0.001


@dataclass(frozen=True)
class RunSettings:
    """What to send: where, how many, how fast. Validated by the CLI."""

    url: str
    pairs: tuple[str, ...]
    requests: int
    concurrency: int
    duration_s: float | None = None
    rate: float | None = None
    timeout_s: float = 10.0
    warmup: int = 0

    @property
    def open_loop(self) -> bool:
        return self.rate is not None

    @property
    def planned_requests(self) -> int | None:
        """The number of requests the run will send, or None for a closed loop bounded by duration."""
        if self.duration_s is None:
            return self.requests
        if self.rate is not None:
            return max(1, round(self.duration_s * self.rate))
        return None

    def request_urls(self) -> list[URL]:
        """One URL per pair; request i goes to pair i modulo their number."""
        base = URL(self.url)
        return [base.update_query(pair=pair) for pair in self.pairs] if self.pairs else [base]

    def as_dict(self) -> dict[str, object]:
        return {
            "url": self.url,
            "pairs": list(self.pairs),
            "requests": self.requests if self.duration_s is None else None,
            "concurrency": self.concurrency,
            "duration_s": self.duration_s,
            "rate": self.rate,
            "timeout_s": self.timeout_s,
            "warmup": self.warmup,
            "mode": "open" if self.open_loop else "closed",
        }


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


async def run_load(
    settings: RunSettings,
    recorder: Recorder,
    *,
    observer: RequestObserver | None = None,
) -> float:
    """Send the warm-up requests, then the measured ones into `recorder`; return the measured seconds."""
    connector = aiohttp.TCPConnector(limit=settings.concurrency, limit_per_host=0)
    async with aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=settings.timeout_s),
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
    ) as session:
        urls = settings.request_urls()
        if settings.warmup:
            await _send(session, urls, Recorder(), settings.concurrency, count=settings.warmup)
        interval_s = 1 / settings.rate if settings.rate is not None else None
        return await _send(
            session,
            urls,
            recorder,
            settings.concurrency,
            count=settings.planned_requests,
            duration_s=settings.duration_s,
            interval_s=interval_s,
            observer=observer,
        )


async def _send(
    session: aiohttp.ClientSession,
    urls: Sequence[URL],
    recorder: Recorder,
    concurrency: int,
    *,
    count: int | None,
    duration_s: float | None = None,
    interval_s: float | None = None,
    observer: RequestObserver | None = None,
) -> float:
    """Run `concurrency` workers that share one sequence of request indices; return elapsed seconds.

    Closed loop (`interval_s` None): a worker sends its next request as soon as the previous one is
    answered, until `count` requests or `duration_s` have passed. Open loop: request i is due at
    t0 + i * interval_s; a worker sleeps until its request is due, or sends at once if it is behind.
    """
    indices = itertools.count()
    n_urls = len(urls)
    get = session.get
    record = recorder.record
    record_error = recorder.record_error
    clock = time.perf_counter
    sleep = asyncio.sleep
    t0 = clock()
    deadline = t0 + duration_s if duration_s is not None and interval_s is None else None

    async def worker() -> None:
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
            try:
                response = await get(urls[i % n_urls])
                try:
                    body = await response.read()
                finally:
                    response.release()
                status = response.status
                nbytes = len(body)
                if status < 400:
                    headers = response.headers
                    response_class = classify(headers.get("X-Cache"), headers.get("Cache-Status"))
                else:
                    error = f"HTTP {status}"
            except TimeoutError:
                error = "timeout"
            except aiohttp.ClientConnectorError:
                error = "connect"
            except aiohttp.ServerDisconnectedError:
                error = "disconnected"
            except aiohttp.ClientPayloadError:
                error = "payload"
            except (aiohttp.ClientError, OSError) as exc:
                error = type(exc).__name__
            end = clock()
            uncorrected_us = int((end - start) * 1_000_000)
            if start - due > LATE_START_TOLERANCE_S:
                recorder.late_starts += 1
                latency_us = int((end - due) * 1_000_000)
            else:
                latency_us = uncorrected_us
            if error is None:
                record(response_class, status, nbytes, latency_us, uncorrected_us)
            else:
                record_error(error, status, nbytes, latency_us, uncorrected_us)
            if observer is not None:
                observer(
                    RequestRecord(
                        (due - t0) * 1000,
                        (start - t0) * 1000,
                        latency_us / 1000,
                        uncorrected_us / 1000,
                        status,
                        response_class,
                        nbytes,
                        error,
                    )
                )

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return clock() - t0
