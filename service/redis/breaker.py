"""A circuit breaker, so a dead Redis costs one probe per cool-down instead of a timeout per request."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class CircuitBreaker:
    """Closed: every call goes through. After `failure_threshold` failures in a row (or one that trips
    it) it opens: calls are refused at once for `cooldown_s`. Then exactly one call (the probe) goes
    through; its success closes the breaker, its failure opens it for another cool-down. The probe
    slot is taken in `allow()`, so a thousand requests arriving together after the cool-down still
    send Redis one probe.
    """

    def __init__(
        self,
        *,
        cooldown_s: float,
        failure_threshold: int = 3,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cooldown_s = cooldown_s
        self.failure_threshold = failure_threshold
        self._clock = clock
        self._failures = 0
        self._open_until: float | None = None
        self._probing = False
        self._closed_again: asyncio.Event | None = None
        self.times_opened = 0

    @property
    def is_closed(self) -> bool:
        return self._open_until is None

    def allow(self) -> bool:
        """Whether to send the next call; when open, lets one probe through after the cool-down."""
        if self._open_until is None:
            return True
        if self._probing or self._clock() < self._open_until:
            return False
        self._probing = True
        return True

    async def wait_closed(self) -> None:
        """Return once the breaker is closed: a probe (a request's command) found Redis back."""
        if self._open_until is None:
            return
        if self._closed_again is None:
            self._closed_again = asyncio.Event()
        await self._closed_again.wait()

    def release_probe(self) -> None:
        """The probe was cancelled before it could tell anything: let the next call probe instead."""
        self._probing = False

    def record_success(self) -> None:
        self._failures = 0
        self._open_until = None
        self._probing = False
        if self._closed_again is not None:
            self._closed_again.set()
            self._closed_again = None

    def record_failure(self, *, trip: bool = False) -> None:
        """Count a failure; `trip` opens the breaker at once, for failures too costly to repeat."""
        self._failures += 1
        if trip or self._probing or self._failures >= self.failure_threshold:
            if self._open_until is None:
                self.times_opened += 1
            self._open_until = self._clock() + self.cooldown_s
            self._probing = False
