"""Writes examples/data/price_history.csv: two days of minute prices for six pairs, made up.

Made once with `python -m examples.make_price_history` and committed; the test suite regenerates it
and checks the bytes match, so the forecaster's training data is reproducible. The prices follow a
geometric random walk with GARCH(1,1) volatility (calm and turbulent spells, as real prices have) and
a market factor shared by every pair, from a fixed seed.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

PATH = Path(__file__).parent / "data" / "price_history.csv"
MINUTES = 2 * 24 * 60
START_PRICES = {
    "BTC-USD": 64_000.0,
    "BTC-EUR": 58_900.0,
    "ETH-USD": 3_100.0,
    "ETH-EUR": 2_850.0,
    "SOL-USD": 145.0,
    "XRP-USD": 0.52,
}
SEED = 20261125


def price_history(minutes: int = MINUTES, seed: int = SEED) -> np.ndarray:
    """Prices, one row a minute and one column a pair (in START_PRICES order)."""
    rng = np.random.default_rng(seed)
    pairs = len(START_PRICES)
    market = rng.standard_normal(minutes)
    own = rng.standard_normal((minutes, pairs))
    shocks = 0.6 * market[:, None] + 0.8 * own
    # GARCH(1,1): today's variance remembers yesterday's shock and variance.
    omega, alpha, beta = 2e-8, 0.08, 0.9
    variance = np.full(pairs, omega / (1 - alpha - beta))
    returns = np.empty((minutes, pairs))
    for t in range(minutes):
        returns[t] = np.sqrt(variance) * shocks[t]
        variance = omega + alpha * returns[t] ** 2 + beta * variance
    start = np.array(list(START_PRICES.values()))
    return start * np.exp(np.cumsum(returns, axis=0))


def write(path: Path = PATH) -> None:
    prices = price_history()
    lines = ["minute," + ",".join(START_PRICES)]
    lines += [f"{t}," + ",".join(f"{p:.6g}" for p in row) for t, row in enumerate(prices)]
    path.write_text("\n".join(lines) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    write(Path(args[0]) if args else PATH)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
