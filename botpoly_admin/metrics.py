"""Pure performance functions over a daily equity curve and the ledger.

Formulas (also in the README):

- the curve starts at the starting capital (the close of the day before the tenant
  was created) and has one value per calendar day up to the last snapshot, a day
  without a snapshot carrying the previous value (``calendar_curve``);
- daily return r_t = E_t / E_{t-1} − 1 over consecutive calendar days;
- sharpe_ratio = mean(r) / std(r, ddof=1) × √365 (crypto markets trade every day);
  None with fewer than 2 returns or zero variance;
- max_drawdown = max over t of (peak_t − E_t) / peak_t, peak_t = max(E_0..E_t);
  0.0 for a curve that never falls.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
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


def calendar_curve(start_day: str, capital: Number, snapshots: Sequence[tuple[str, Number]]
                   ) -> list[tuple[str, Number]]:
    """The daily equity curve as the metrics read it: the starting *capital* on the day
    before *start_day* (the tenant's first day), then one value per calendar day up to
    the last snapshot, a day without a snapshot carrying the one before.

    Without the starting point a tenant that lost on its first day would show no
    drawdown; without the carried days a week's move between two snapshots would read
    as one day's return. Days are 'YYYY-MM-DD'; snapshots before *start_day* (a
    backdated clock) start the curve instead.
    """
    by_day = dict(snapshots)
    first = date.fromisoformat(min([start_day, *by_day]))
    curve: list[tuple[str, Number]] = [((first - timedelta(days=1)).isoformat(), capital)]
    if not by_day:
        return curve
    last = date.fromisoformat(max(by_day))
    value = capital
    day = first
    while day <= last:
        value = by_day.get(day.isoformat(), value)
        curve.append((day.isoformat(), value))
        day += timedelta(days=1)
    return curve


@dataclass(frozen=True)
class OrderCounts:
    """Orders by outcome: an order is one, however many ledger rows it has."""

    total: int
    filled: int  # every share filled
    partial: int  # some shares filled, the rest cancelled or still resting
    failed: int
    cancelled: int
    pending: int  # resting, nothing filled yet

    @property
    def fill_rate(self) -> float | None:
        """(filled + partial) / orders that reached an outcome, in %; None without any."""
        done = self.filled + self.partial + self.failed + self.cancelled
        return 100.0 * (self.filled + self.partial) / done if done else None


REST_SUFFIX = "-rest"
OUTCOMES = ("filled", "partial", "failed", "cancelled", "pending")
TRADED = frozenset({"filled", "partial"})


def order_counts(rows: Iterable[tuple[str, str]]) -> OrderCounts:
    """Count orders from (client order id, status) ledger rows of orders (settlements
    excluded). A GTC order that filled in part and rested the rest has two rows, ``C``
    and ``C-rest``: they are one order, filled once the rest filled."""
    orders: dict[str, str] = {}
    rests: dict[str, str] = {}
    for client_order_id, status in rows:
        if client_order_id.endswith(REST_SUFFIX):
            rests[client_order_id[: -len(REST_SUFFIX)]] = status
        else:
            orders[client_order_id] = status
    counts = dict.fromkeys(OUTCOMES, 0)
    # An order in one row (nearly all of them) ends as its status says.
    alone = Counter(status for cid, status in orders.items() if cid not in rests)
    alone.update(status for cid, status in rests.items() if cid not in orders)
    for status, n in alone.items():
        counts[status if status in counts else "failed"] += n
    for cid in rests.keys() & orders.keys():
        order, rest = orders[cid], rests[cid]
        if order in TRADED or rest in TRADED:
            counts["filled" if rest == "filled" else "partial"] += 1
        else:
            counts[rest if rest in counts else "failed"] += 1
    return OrderCounts(total=len(orders.keys() | rests.keys()), **counts)


def round_trip_pnls(closing: Iterable[tuple[str | None, Number]]) -> list[Decimal]:
    """Realized P&L per round trip from (group id, realized P&L) of the closing rows
    (closing fills and settlements). Rows of one group (the two legs of a complement
    pair settling) are one round trip: a pair that made money is one win, not a win
    and a loss."""
    trips: list[Decimal] = []
    groups: dict[str, int] = {}
    for group, pnl in closing:
        value = Decimal(str(pnl))
        if group is None:
            trips.append(value)
        elif group in groups:
            trips[groups[group]] += value
        else:
            groups[group] = len(trips)
            trips.append(value)
    return trips


@dataclass(frozen=True)
class TradeFigures:
    """A ledger's orders and round trips: what trade counts, fill and win rates read."""

    orders: OrderCounts
    round_trips: list[Decimal]

    @property
    def winning_round_trips(self) -> int:
        """Round trips that made money."""
        return sum(1 for pnl in self.round_trips if pnl > 0)

    @property
    def win_rate(self) -> float | None:
        """Percentage of winning round trips (None without any)."""
        return win_rate(self.round_trips)


def trade_figures(rows: Iterable[tuple[str, str, str, int, str | None, Number]]
                  ) -> TradeFigures:
    """Orders and round trips from ledger rows (client order id, status, side,
    closes_position, group id, realized P&L): settlements are no orders
    (``order_counts``), closing rows make the round trips (``round_trip_pnls``)."""
    rows = list(rows)
    return TradeFigures(
        orders=order_counts((r[0], r[1]) for r in rows if r[2] != "SETTLE"),
        round_trips=round_trip_pnls((r[4], r[5]) for r in rows if r[3]),
    )
