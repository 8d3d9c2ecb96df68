"""Calls the model the same way whatever its kind: admitted (admission.py), batched when it can be
(batcher.py), bounded in time, off the loop when synchronous, and its answer validated by its output
type and encoded once, as the bytes every hit will serve."""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import secrets
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter, ValidationError

from service.errors import (
    ModelBusy,
    ModelError,
    ModelFailed,
    ModelTimeout,
    PredcacheError,
    UnknownInput,
    UpstreamRefused,
)
from service.metrics import Metrics
from service.models.admission import Admission
from service.models.batcher import Batcher
from service.models.contract import Contract, Uncached
from service.models.inputs import ModelInput
from service.models.json_bytes import dumps_kept

log = logging.getLogger(__name__)

# What a model raises (or returns for one input of a batch) about the input, not about itself: not
# counted as a model error.
THE_INPUTS_FAULT = (UnknownInput, UpstreamRefused)


@dataclass(frozen=True, slots=True)
class Limits:
    """How the model may be called: its timeout, how many calls at once, how many waiting, and how
    misses are batched for a model with `predict_batch`."""

    timeout_s: float
    # None: 1 for a batch model, the thread count for a sync one, the queue's size for an async one.
    max_concurrency: int | None = None
    threads: int = 4  # the pool that runs a synchronous model
    queue_max: int = 1000
    batch_wait_s: float = 0.002
    max_batch_size: int = 32


class UncachedBody(bytes):
    """A body to serve but not to store: the model returned it as `Uncached`. A bytes subclass, so
    that what only serves a body needs no change; the one place that stores bodies checks for it."""


class ModelRunner:
    def __init__(self, contract: Contract, *, limits: Limits, executor: Executor, metrics: Metrics) -> None:
        self.contract = contract
        self.version = contract.version
        self.timeout_s = limits.timeout_s
        self.output_adapter: TypeAdapter[Any] = TypeAdapter(contract.output_type)
        self._executor = executor
        self._metrics = metrics
        # Until when (loop time) the model asked not to be called (ModelBusy): misses are refused.
        self._busy_until = 0.0
        default = 1 if contract.predict_batch is not None else limits.threads
        if contract.predict_batch is None and inspect.iscoroutinefunction(contract.predict):
            default = limits.queue_max  # an async model bounds itself; only the queue bounds it here
        self.admission = Admission(
            max_concurrency=limits.max_concurrency or default, queue_max=limits.queue_max, metrics=metrics
        )
        self._batcher = None
        if contract.predict_batch is not None:
            predict_batch = contract.predict_batch
            self._batcher = Batcher(
                lambda arguments: self._call_batch(predict_batch, arguments),
                admission=self.admission,
                max_size=limits.max_batch_size,
                wait_s=limits.batch_wait_s,
                retry_budget_s=limits.timeout_s,
                metrics=metrics,
            )

    def check(self, model_input: ModelInput) -> None:
        """Raise UnknownInput for an input the model says it cannot predict, at no model cost."""
        if self.contract.check is not None:
            self.contract.check(model_input.value)

    async def predict(self, model_input: ModelInput) -> bytes:
        """The model's output for `model_input` as a JSON body; ModelError, ModelTimeout,
        UnknownInput, Overloaded or ModelBusy otherwise."""
        argument = self.contract.argument(model_input.value)
        try:
            self._check_not_busy()  # at once, rather than after a wait in the queue
            if self._batcher is not None:
                result = await self._batcher.submit(argument)
            else:
                async with self.admission.call():
                    result = await self._call(self.contract.predict, argument, items=1)
        except TimeoutError:
            raise ModelTimeout(str(model_input), self.timeout_s) from None
        except PredcacheError:
            raise  # the model's own account, for the client (UnknownInput, UpstreamRefused, ...)
        except ModelFailed as exc:
            raise self._model_error(model_input, str(exc), exc.detail) from exc
        except Exception as exc:
            # The model's exception text may name other inputs of its batch: only the log sees it.
            error = self._model_error(model_input, "it raised an exception", f"{type(exc).__name__}: {exc}")
            log.debug("model error %s: the traceback", error.request_id, exc_info=exc)
            raise error from exc
        if isinstance(result, Uncached):
            return UncachedBody(self.encode(result.result, model_input))
        return self.encode(result, model_input)

    async def _call(self, function: Callable[[Any], Any], argument: Any, *, items: int) -> Any:
        """One call of the model, bounded by the model timeout, counted and timed."""
        self._check_not_busy()  # again: the model may have asked while this call waited for a slot
        metrics = self._metrics
        metrics.model_calls.inc()
        metrics.model_items.inc(items)
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout_s):
                if inspect.iscoroutinefunction(function):
                    return await function(argument)
                # A thread cannot be cancelled: on timeout the waiters get 504 and the thread
                # finishes on its own; the bounded pool keeps such leftovers from piling up.
                return await asyncio.get_running_loop().run_in_executor(self._executor, function, argument)
        except THE_INPUTS_FAULT:
            raise
        except ModelBusy as exc:
            metrics.model_errors.inc()
            loop = asyncio.get_running_loop()
            self._busy_until = max(self._busy_until, loop.time() + exc.retry_after_s)
            raise
        except Exception:
            metrics.model_errors.inc()
            raise
        finally:
            metrics.model_duration.observe(time.perf_counter() - started)

    async def _call_batch(self, predict_batch: Callable[[Any], Any], arguments: list[Any]) -> Any:
        results = await self._call(predict_batch, arguments, items=len(arguments))
        # An input failing alone is the model failing too, as much as a call that raises.
        failed = sum(isinstance(r, Exception) and not isinstance(r, THE_INPUTS_FAULT) for r in results)
        if failed:
            self._metrics.model_errors.inc(failed)
        return results

    def _check_not_busy(self) -> None:
        remaining_s = self._busy_until - asyncio.get_running_loop().time()
        if remaining_s > 0:
            raise ModelBusy(math.ceil(remaining_s))

    def _model_error(self, model_input: ModelInput, reason: str, detail: str) -> ModelError:
        """The client's ModelError, and the log line that says more under the same request id."""
        request_id = secrets.token_hex(8)
        log.warning("model error %s predicting %s: %s: %s", request_id, model_input, reason, detail)
        return ModelError(str(model_input), reason, request_id)

    def encode(self, result: object, model_input: ModelInput) -> bytes:
        try:
            output = self.output_adapter.validate_python(self.contract.output(result, model_input.value))
            data = self.output_adapter.dump_python(output, mode="json")
        except (ValidationError, ValueError) as exc:
            raise self._model_error(model_input, "its output is invalid", str(exc)) from None
        # orjson would write NaN and infinities as null: a broken prediction served as a real one.
        if not _all_finite(data):
            reason = "its output holds a number that is not a finite number"
            raise self._model_error(model_input, reason, "NaN or an infinity") from None
        return dumps_kept(data)

    def is_output(self, body: bytes) -> bool:
        """Whether `body` is a valid output: a cache value is served only if it is."""
        try:
            self.output_adapter.validate_json(body)
        except ValidationError:
            return False
        return True

    async def close(self) -> None:
        if self._batcher is not None:
            await self._batcher.close()


def _all_finite(data: object) -> bool:
    if isinstance(data, float):
        return math.isfinite(data)
    if isinstance(data, dict):
        return all(_all_finite(value) for value in data.values())
    if isinstance(data, list):
        return all(_all_finite(value) for value in data)
    return True
