"""An example model plug-in: `MODEL=examples.linear_model:LinearTrendModel python -m service`.

It fits a least-squares line to each pair's recent prices and extrapolates it five minutes ahead. Its
`predict` is synchronous, CPU-bound Python, so predcache runs it in its bounded thread pool.
"""

from __future__ import annotations

import math

HORIZON_S = 300
_HISTORY = 240  # one price a second over the last four minutes


class LinearTrendModel:
    version = "linear-trend-1"
    horizon_seconds = HORIZON_S
    pairs = frozenset({"BTC-USD", "ETH-USD", "ETH-EUR"})

    def __init__(self) -> None:
        # A real plug-in would load its weights or fetch its history here, once, at startup.
        bases = {"BTC-USD": 64_000.0, "ETH-USD": 3_100.0, "ETH-EUR": 2_850.0}
        self._history = {
            pair: [base * (1 + 0.0004 * t + 0.002 * math.sin(t / 9)) for t in range(_HISTORY)]
            for pair, base in bases.items()
        }

    def predict(self, pair: str) -> float:
        prices = self._history[pair]
        n = len(prices)
        mean_t = (n - 1) / 2
        mean_p = sum(prices) / n
        slope = sum((t - mean_t) * (p - mean_p) for t, p in enumerate(prices)) / sum(
            (t - mean_t) ** 2 for t in range(n)
        )
        return round(mean_p + slope * (n - 1 - mean_t + HORIZON_S), 2)
