"""The demo model: six coins priced in EUR, USD and GBP five minutes ahead, slowly."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable

DEFAULT_HORIZON_S = 300

_BASE_USD = {"BTC": 64_000.0, "ETH": 3_100.0, "SOL": 145.0, "XRP": 0.52, "ADA": 0.45, "DOGE": 0.12}
_QUOTE_PER_USD = {"USD": 1.0, "EUR": 0.92, "GBP": 0.79}


class DemoModel:
    """Prices of six coins in EUR, USD and GBP, 5 minutes ahead: slow waves plus a little noise.

    Deterministic in (pair, time), so two replicas agree; `latency_s` stands in for a heavy model.
    It follows the pair-only protocol (`predict(pair) -> float`), which predcache adapts.
    """

    version = "demo-1"
    horizon_seconds = DEFAULT_HORIZON_S
    pairs = frozenset(f"{base}-{quote}" for base in _BASE_USD for quote in _QUOTE_PER_USD)

    def __init__(
        self, latency_s: float = 1.0, clock: Callable[[], float] = time.time, item_latency_s: float = 0.001
    ) -> None:
        self.latency_s = latency_s
        self.item_latency_s = item_latency_s
        self._clock = clock

    async def predict(self, pair: str) -> float:
        await asyncio.sleep(self.latency_s)
        return self._price(pair)

    async def predict_batch(self, pairs: list[str]) -> list[float]:
        """Several pairs in one call, as a vectorized model would: a call costs `latency_s` plus
        `item_latency_s` per pair."""
        await asyncio.sleep(self.latency_s + self.item_latency_s * len(pairs))
        return [self._price(pair) for pair in pairs]

    def _price(self, pair: str) -> float:
        base, quote = pair.split("-")
        t = self._clock() + self.horizon_seconds
        phase = sum(map(ord, base)) % 17
        drift = 0.03 * math.sin(t / 3600 + phase) + 0.01 * math.sin(t / 240 + 2 * phase)
        noise = 0.002 * math.sin(t * 1.7 + phase)
        price = _BASE_USD[base] * _QUOTE_PER_USD[quote] * (1 + drift + noise)
        return round(price, 6 if price < 10 else 2)
