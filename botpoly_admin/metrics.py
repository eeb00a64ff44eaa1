"""Pure performance functions over a daily equity curve and the ledger.

Formulas (also in the README):

- daily return r_t = E_t / E_{t-1} − 1 over consecutive daily snapshots;
- sharpe_ratio = mean(r) / std(r, ddof=1) × √365 (crypto markets trade every day);
  None with fewer than 2 returns or zero variance;
- max_drawdown = max over t of (peak_t − E_t) / peak_t, peak_t = max(E_0..E_t);
  0.0 for a curve that never falls.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

Number = float | int | Decimal

PERIODS_PER_YEAR = 365


def daily_returns(equity: Sequence[Number]) -> list[float]:
    """Simple returns between consecutive equity values (a non-positive base is skipped)."""
    values = [float(v) for v in equity]
    return [b / a - 1.0 for a, b in zip(values, values[1:], strict=False) if a > 0]


def sharpe_ratio(equity: Sequence[Number], periods_per_year: int = PERIODS_PER_YEAR
                 ) -> float | None:
    """Annualised Sharpe ratio of a daily equity curve (risk-free rate 0)."""
    returns = daily_returns(equity)
    if len(returns) < 2:
        return None
    mean = sum(returns) / len(returns)
    variance = sum((r - mean) ** 2 for r in returns) / (len(returns) - 1)
    std = math.sqrt(variance)
    if std == 0 or math.isclose(std, 0.0, abs_tol=1e-15):
        return None
    return mean / std * math.sqrt(periods_per_year)


@dataclass(frozen=True)
class Drawdown:
    """The largest peak-to-trough fall: fraction of the peak, amount, and where."""

    fraction: float
    amount: float
    peak_index: int | None
    trough_index: int | None


def drawdown_details(equity: Sequence[Number]) -> Drawdown:
    """The largest peak-to-trough fall of *equity*, with the indices of peak and trough."""
    best = Drawdown(0.0, 0.0, None, None)
    peak_value: float | None = None
    peak_index = 0
    for index, raw in enumerate(equity):
        value = float(raw)
        if peak_value is None or value > peak_value:
            peak_value, peak_index = value, index
            continue
        if peak_value > 0:
            fraction = (peak_value - value) / peak_value
            if fraction > best.fraction:
                best = Drawdown(fraction, peak_value - value, peak_index, index)
    return best


def max_drawdown(equity: Sequence[Number]) -> float:
    """Largest peak-to-trough fall of *equity* as a fraction of the peak (0.0 if none)."""
    return drawdown_details(equity).fraction


def win_rate(realized_pnls: Sequence[Number]) -> float | None:
    """Percentage of realized round trips with positive P&L (None without any)."""
    if not realized_pnls:
        return None
    wins = sum(1 for p in realized_pnls if Decimal(str(p)) > 0)
    return 100.0 * wins / len(realized_pnls)
