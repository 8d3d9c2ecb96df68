"""The model seam: the `Predictor` protocol, loading one from `module:attribute`, and the demo model."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import math
import time
from collections.abc import Awaitable, Callable, Collection
from concurrent.futures import Executor
from typing import Protocol, runtime_checkable

from service.config import DEMO_MODEL, Settings
from service.errors import ConfigError, ModelError, ModelTimeout

DEFAULT_HORIZON_S = 300


@runtime_checkable
class Predictor(Protocol):
    """What a model must offer to sit behind predcache.

    - `version`: changes whenever predictions change; cached entries of another version are never served.
    - `predict(pair)`: the predicted price of `pair` (e.g. "ETH-EUR", in the quote currency) at
      `horizon_seconds` from now. It may be `async def` (awaited on the event loop) or a plain function
      (run in a bounded thread pool, so a CPU-bound model never blocks cache hits).
    Optional attributes: `pairs` (the canonical pairs it predicts; others get 404) and `horizon_seconds`.
    """

    @property
    def version(self) -> str: ...

    def predict(self, pair: str) -> float | Awaitable[float]: ...


def load_predictor(spec: str) -> Predictor:
    """Import `package.module:attribute`; call it if it is a class or zero-argument factory."""
    module_name, _, attribute = spec.partition(":")
    try:
        target = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise ConfigError("MODEL", f"cannot load {spec!r}: {exc}") from None
    # A class also "has" version and predict, so instantiate classes before checking the protocol.
    is_factory = isinstance(target, type) or not isinstance(target, Predictor)
    predictor = target() if is_factory and callable(target) else target
    if not isinstance(predictor, Predictor):
        raise ConfigError("MODEL", f"{spec!r} has no `version` and `predict(pair)`")
    return predictor


class ModelRunner:
    """Calls a predictor the same way whatever its kind: bounded in time, off the loop when sync."""

    def __init__(self, predictor: Predictor, *, timeout_s: float, executor: Executor) -> None:
        self.predictor = predictor
        self.version = str(predictor.version)
        self.horizon_s = int(getattr(predictor, "horizon_seconds", DEFAULT_HORIZON_S))
        pairs: Collection[str] | None = getattr(predictor, "pairs", None)
        self.pairs = None if pairs is None else frozenset(pairs)
        self.timeout_s = timeout_s
        self._executor = executor
        self._is_async = inspect.iscoroutinefunction(predictor.predict)

    def supports(self, pair: str) -> bool:
        return self.pairs is None or pair in self.pairs

    async def predict(self, pair: str) -> float:
        """The model's finite prediction for `pair`; ModelError or ModelTimeout otherwise."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.timeout_s):
                if self._is_async:
                    value = await self.predictor.predict(pair)  # type: ignore[misc]
                else:
                    # A thread cannot be cancelled: on timeout the waiters get 504 and the thread
                    # finishes on its own; the bounded pool keeps such leftovers from piling up.
                    value = await loop.run_in_executor(self._executor, self.predictor.predict, pair)
        except TimeoutError:
            raise ModelTimeout(pair, self.timeout_s) from None
        except Exception as exc:
            raise ModelError(pair, f"{type(exc).__name__}: {exc}") from exc
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ModelError(pair, f"the model returned {value!r}, not a finite number")
        return float(value)


# -- the demo model ---------------------------------------------------------------------------------

_BASE_USD = {"BTC": 64_000.0, "ETH": 3_100.0, "SOL": 145.0, "XRP": 0.52, "ADA": 0.45, "DOGE": 0.12}
_QUOTE_PER_USD = {"USD": 1.0, "EUR": 0.92, "GBP": 0.79}


class DemoModel:
    """Prices of six coins in EUR, USD and GBP, 5 minutes ahead: slow waves plus a little noise.

    Deterministic in (pair, time), so two replicas agree; `latency_s` stands in for a heavy model.
    """

    version = "demo-1"
    horizon_seconds = DEFAULT_HORIZON_S
    pairs = frozenset(f"{base}-{quote}" for base in _BASE_USD for quote in _QUOTE_PER_USD)

    def __init__(self, latency_s: float = 1.0, clock: Callable[[], float] = time.time) -> None:
        self.latency_s = latency_s
        self._clock = clock

    async def predict(self, pair: str) -> float:
        await asyncio.sleep(self.latency_s)
        base, quote = pair.split("-")
        t = self._clock() + self.horizon_seconds
        phase = sum(map(ord, base)) % 17
        drift = 0.03 * math.sin(t / 3600 + phase) + 0.01 * math.sin(t / 240 + 2 * phase)
        noise = 0.002 * math.sin(t * 1.7 + phase)
        price = _BASE_USD[base] * _QUOTE_PER_USD[quote] * (1 + drift + noise)
        return round(price, 6 if price < 10 else 2)


def build_predictor(settings: Settings) -> Predictor:
    """The model the settings name; the demo model takes its latency from the settings."""
    if settings.model == DEMO_MODEL:
        return DemoModel(latency_s=settings.demo_model_latency_s)
    return load_predictor(settings.model)
