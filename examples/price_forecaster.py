"""A real trained model behind predcache: `MODEL=examples.price_forecaster:PriceForecaster`.

Gradient boosting with quantile loss (scikit-learn), fitted at startup on examples/data/price_history.csv
(two days of made-up minute prices; `python -m examples.make_price_history` made it), forecasts a
pair's price `horizon_minutes` ahead with a 10%-90% band. The end of the history stands for "now":
a live model would read its recent prices from a feed instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from sklearn.ensemble import HistGradientBoostingRegressor

from service.errors import UnknownInput
from service.pair import Pair

DATA = Path(__file__).parent / "data" / "price_history.csv"
QUANTILES = (0.1, 0.5, 0.9)
LAGS_MIN = (1, 5, 15, 30, 60)  # trailing log returns the model sees
VOL_WINDOWS_MIN = (30, 120)  # trailing volatility windows
MAX_HORIZON_MIN = 60


class ForecastQuery(BaseModel):
    """What to forecast: `?pair=BTC-USD&horizon_minutes=15`, or the same as a JSON object."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pair: Pair
    horizon_minutes: int = Field(5, ge=1, le=MAX_HORIZON_MIN, description="minutes ahead, 1 to 60")


class Forecast(BaseModel):
    pair: str
    horizon_minutes: int
    predicted_price: float = Field(description="the median forecast")
    low: float = Field(description="10% quantile")
    high: float = Field(description="90% quantile")
    model_version: str
    predicted_at: str = Field(description="ISO 8601, UTC")


def features(log_prices: np.ndarray, at: np.ndarray, horizons: np.ndarray) -> np.ndarray:
    """One row per (minute `at`, horizon): trailing returns, trailing volatility, the horizon."""
    returns = np.diff(log_prices, prepend=log_prices[0])
    columns = [log_prices[at] - log_prices[at - lag] for lag in LAGS_MIN]
    # Rolling sums of squared returns by cumulative sums: one vectorized pass for every row.
    squared = np.concatenate(([0.0], np.cumsum(returns**2)))
    columns += [np.sqrt((squared[at + 1] - squared[at + 1 - window]) / window) for window in VOL_WINDOWS_MIN]
    columns.append(horizons.astype(float))
    return np.column_stack(columns)


class PriceForecaster:
    version = "forecaster-1"
    Input = ForecastQuery
    Output = Forecast

    def __init__(self, data: Path = DATA, *, max_iter: int = 100) -> None:
        header = data.read_text().partition("\n")[0].split(",")[1:]
        table = np.loadtxt(data, delimiter=",", skiprows=1)
        self._log_prices = {pair: np.log(table[:, i + 1]) for i, pair in enumerate(header)}
        self.pairs = frozenset(header)
        self._models = [self._fit(quantile, max_iter) for quantile in QUANTILES]

    def _fit(self, quantile: float, max_iter: int) -> HistGradientBoostingRegressor:
        rng = np.random.default_rng(0)
        rows, targets = [], []
        for log_prices in self._log_prices.values():
            first = max(*LAGS_MIN, *VOL_WINDOWS_MIN)
            at = np.arange(first, len(log_prices) - MAX_HORIZON_MIN, 3)
            horizons = rng.integers(1, MAX_HORIZON_MIN + 1, size=len(at))
            rows.append(features(log_prices, at, horizons))
            targets.append(log_prices[at + horizons] - log_prices[at])
        model = HistGradientBoostingRegressor(
            loss="quantile", quantile=quantile, max_iter=max_iter, learning_rate=0.1, random_state=0
        )
        return model.fit(np.concatenate(rows), np.concatenate(targets))

    def check(self, query: ForecastQuery) -> None:
        """Refuse a pair without history before any cache or model work (predcache calls it first)."""
        if query.pair not in self.pairs:
            known = ", ".join(sorted(self.pairs))
            raise UnknownInput(f"the forecaster has no history for {query.pair}; it knows {known}")

    def predict(self, query: ForecastQuery) -> Forecast:
        return self.predict_batch([query])[0]

    def predict_batch(self, queries: Sequence[ForecastQuery]) -> list[Forecast]:
        """One vectorized call for every query; an unknown pair fails the whole batch."""
        for query in queries:
            self.check(query)
        rows = np.vstack(
            [
                features(
                    self._log_prices[q.pair],
                    np.array([len(self._log_prices[q.pair]) - 1]),
                    np.array([q.horizon_minutes]),
                )
                for q in queries
            ]
        )
        # Quantile models are fitted apart and may cross: sorting keeps low <= median <= high.
        returns = np.sort(np.column_stack([model.predict(rows) for model in self._models]), axis=1)
        now = datetime.now(UTC).isoformat(timespec="milliseconds")
        forecasts = []
        for query, (low, mid, high) in zip(queries, returns, strict=True):
            last = float(np.exp(self._log_prices[query.pair][-1]))
            forecasts.append(
                Forecast(
                    pair=query.pair,
                    horizon_minutes=query.horizon_minutes,
                    predicted_price=_round(last * np.exp(mid)),
                    low=_round(last * np.exp(low)),
                    high=_round(last * np.exp(high)),
                    model_version=self.version,
                    predicted_at=now,
                )
            )
        return forecasts


def _round(price: float) -> float:
    return round(float(price), 6 if price < 10 else 2)
