"""Admission control: the model never runs more than `max_concurrency` calls at once, and at most
`queue_max` predictions wait for it; a miss that finds the queue full is refused at once (503
`overloaded` with Retry-After) rather than waiting behind thousands of others. Hits never come here.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence

from service.errors import Overloaded
from service.metrics import Metrics


class Admission:
    def __init__(self, *, max_concurrency: int, queue_max: int, metrics: Metrics) -> None:
        self.max_concurrency = max_concurrency
        self.queue_max = queue_max
        self.waiting = 0  # predictions admitted and not yet in a model call
        self._slots = asyncio.Semaphore(max_concurrency)
        self._metrics = metrics

    def reserve(self, items: int = 1) -> float:
        """Admit `items` predictions to the queue, or raise Overloaded; returns when they arrived."""
        if self.waiting + items > self.queue_max:
            self._metrics.overloaded.inc(items)
            raise Overloaded(self.waiting)
        self.waiting += items
        return asyncio.get_running_loop().time()

    async def acquire(self) -> None:
        """Wait for a free call slot."""
        await self._slots.acquire()

    def release(self) -> None:
        self._slots.release()

    def started(self, arrivals: Sequence[float]) -> None:
        """Predictions that arrived at `arrivals` are now in a model call: they wait no more."""
        self.waiting -= len(arrivals)
        now = asyncio.get_running_loop().time()
        for arrived in arrivals:
            self._metrics.queue_wait.observe(now - arrived)

    @contextlib.asynccontextmanager
    async def call(self) -> AsyncIterator[None]:
        """One prediction, one call: admitted, then run when a slot is free."""
        arrived = self.reserve()
        try:
            await self.acquire()
        except BaseException:
            self.waiting -= 1  # it never reached the model
            raise
        self.started([arrived])
        try:
            yield
        finally:
            self.release()
