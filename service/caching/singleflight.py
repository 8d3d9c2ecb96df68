"""Single-flight: concurrent callers for one key share one call instead of each making their own."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine, Hashable
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SingleFlight(Generic[K, V]):
    """One task per key in flight, owned by this table rather than by the caller who started it.

    Callers wait through `asyncio.shield`, so a caller that is cancelled (a client hung up) leaves the
    task running for everybody else, and it still completes (and stores its result) if every caller
    left. A key leaves the table as soon as its task is done, so the table holds only what is in
    flight, never every key ever seen.
    """

    def __init__(self) -> None:
        self._tasks: dict[K, asyncio.Task[V]] = {}
        self._detached: set[asyncio.Task[V]] = set()  # still running for their callers; see detach

    def __len__(self) -> int:
        return len(self._tasks)

    def __contains__(self, key: K) -> bool:
        task = self._tasks.get(key)
        return task is not None and not task.done()

    async def do(self, key: K, call: Callable[[], Coroutine[Any, Any, V]]) -> tuple[V, bool]:
        """`call()`'s result, and whether it was shared with a call already in flight."""
        task = self._tasks.get(key)
        # A task that is done but not yet forgotten (its callback runs on the next loop step) is
        # not in flight: joining it would hand a newcomer an old error.
        joined = task is not None and not task.done()
        if not joined:
            task = self.start(key, call)
        assert task is not None
        return await asyncio.shield(task), joined

    def start(self, key: K, call: Callable[[], Coroutine[Any, Any, V]]) -> asyncio.Task[V]:
        """Start `call()` for `key` unless one is in flight; return the task either way."""
        task = self._tasks.get(key)
        if task is None or task.done():
            task = asyncio.create_task(call())
            self._tasks[key] = task
            task.add_done_callback(lambda done: self._forget(key, done))
        return task

    def _forget(self, key: K, task: asyncio.Task[V]) -> None:
        if self._tasks.get(key) is task:
            del self._tasks[key]
        # Every waiter may have left; retrieving the outcome here keeps asyncio from logging
        # "exception was never retrieved" for an error nobody was left to receive.
        if not task.cancelled():
            task.exception()

    def detach(self, key: K | None = None) -> None:
        """Later callers for `key` (None: for every key) start a call of their own; the callers
        already waiting keep theirs. For a call that an invalidation made out of date mid-flight."""
        for k in list(self._tasks) if key is None else [key]:
            task = self._tasks.pop(k, None)
            if task is not None and not task.done():
                self._detached.add(task)
                task.add_done_callback(self._detached.discard)

    async def close(self) -> None:
        """Cancel what is still in flight (at shutdown, after requests have drained)."""
        tasks = [*self._tasks.values(), *self._detached]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
