"""Dynamic batching: predictions missed by every concurrent request are gathered into one call of a
model's `predict_batch`.

A batch is cut when a call slot is free (see admission.py) and either `max_size` predictions are
waiting, or none has arrived for `wait_s`, or the oldest has waited `MAX_WAIT_FACTOR * wait_s`.
- Cutting when a slot frees, not on a timer alone, matters for a model that runs one call at a time:
  while it is busy the queue fills, and the next call takes a full batch instead of a string of small
  ones queued behind each other.
- A quiet spell rather than a fixed time from the first arrival: misses of a burst reach the model
  spread out (each parses its request and takes its fleet lease first), and a fast model would
  otherwise be called with a few of them at a time.
A batch call's result for one item may be an exception: that item alone fails with it. A call that
raises is retried in halves until the inputs that make it fail are alone (see `Batcher._settle`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from service.errors import ModelBusy
from service.metrics import Metrics
from service.models.admission import Admission

BatchCall = Callable[[list[Any]], Awaitable[Sequence[Any]]]

# The oldest prediction of a forming batch waits at most this many quiet spells.
MAX_WAIT_FACTOR = 5


@dataclass(eq=False)
class _Item:
    argument: Any
    arrived_at: float
    result: asyncio.Future[Any] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class Batcher:
    def __init__(
        self,
        call: BatchCall,
        *,
        admission: Admission,
        max_size: int,
        wait_s: float,
        retry_budget_s: float,
        metrics: Metrics,
    ) -> None:
        self._call = call  # the model's batch call, bounded in time by the caller's wrapper
        self._admission = admission
        self._max_size = max_size
        self._wait_s = wait_s
        self._retry_budget_s = retry_budget_s
        self._metrics = metrics
        self._pending: deque[_Item] = deque()
        self._arrived = asyncio.Event()
        self._dispatcher: asyncio.Task[None] | None = None
        self._calls: set[asyncio.Task[None]] = set()

    async def submit(self, argument: Any) -> Any:
        """What the batch call returned for `argument`, or the exception it raised."""
        item = _Item(argument, self._admission.reserve())
        self._pending.append(item)
        self._arrived.set()
        if self._dispatcher is None:
            self._dispatcher = asyncio.create_task(self._dispatch_forever())
        # Shielded: a waiter that leaves does not cancel the item, which others may share.
        return await asyncio.shield(item.result)

    async def _dispatch_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._pending:
                self._arrived.clear()
                await self._arrived.wait()
            await self._admission.acquire()
            try:
                cap = self._pending[0].arrived_at + self._wait_s * MAX_WAIT_FACTOR
                while len(self._pending) < self._max_size:
                    remaining = min(self._pending[-1].arrived_at + self._wait_s, cap) - loop.time()
                    if remaining <= 0:
                        break
                    self._arrived.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(remaining):
                            await self._arrived.wait()
                batch = [self._pending.popleft() for _ in range(min(self._max_size, len(self._pending)))]
            except BaseException:
                self._admission.release()
                raise
            self._admission.started([item.arrived_at for item in batch])
            task = asyncio.create_task(self._run(batch))
            self._calls.add(task)
            task.add_done_callback(self._calls.discard)

    async def _run(self, batch: list[_Item]) -> None:
        try:
            await self._settle(batch)
        finally:
            self._admission.release()

    async def _settle(
        self, batch: list[_Item], deadline: float | None = None, parent_error: Exception | None = None
    ) -> None:
        """Call the model for `batch` and give each item its result. If the call raises, one input may
        be to blame (a poisoned batch): the halves are called again, one after the other in the slot
        this batch holds, down to single inputs, so that only the inputs failing alone get an error.

        Bound: a batch of n holding k inputs that fail costs at most 2k*ceil(log2 n) calls more than
        one (each level of halving calls at most two halves per failing input), and never more than
        2(n - 1) (every input failing). Splitting stops one model timeout (`retry_budget_s`) after the
        first failure: the inputs not yet settled then fail with the error of the call that held them.
        A call that timed out is not split: a batch that slow would take about as long again per half;
        nor is one refused by a busy model, which no input of the batch made busy.
        """
        loop = asyncio.get_running_loop()
        if deadline is not None and parent_error is not None and loop.time() >= deadline:
            self._fail(batch, parent_error)
            return
        self._metrics.batch_size.observe(len(batch))
        budget = asyncio.timeout_at(deadline)
        try:
            async with budget:
                results = await self._call([item.argument for item in batch])
            if len(results) != len(batch):
                raise ValueError(f"predict_batch returned {len(results)} outputs for {len(batch)} inputs")
        except Exception as exc:
            if budget.expired() and parent_error is not None:
                self._fail(batch, parent_error)  # the retry budget ran out during this call
            elif len(batch) == 1 or isinstance(exc, TimeoutError | ModelBusy):
                self._fail(batch, exc)
            else:
                deadline = loop.time() + self._retry_budget_s if deadline is None else deadline
                half = (len(batch) + 1) // 2
                for part in (batch[:half], batch[half:]):
                    await self._settle(part, deadline, exc)
            return
        for item, result in zip(batch, results, strict=True):
            if item.result.done():
                continue
            if isinstance(result, Exception):
                item.result.set_exception(result)  # e.g. UnknownInput for this input only
            else:
                item.result.set_result(result)

    @staticmethod
    def _fail(batch: list[_Item], exc: Exception) -> None:
        for item in batch:
            if not item.result.done():
                item.result.set_exception(exc)

    async def close(self) -> None:
        """At shutdown: stop gathering and cancel calls still running."""
        tasks = [*self._calls, *([self._dispatcher] if self._dispatcher else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        for item in self._pending:
            item.result.cancel()
