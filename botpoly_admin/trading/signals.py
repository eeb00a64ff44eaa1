"""Market-level signals computed once per market snapshot and shared by every bot.

Many tenants watch the same markets with the same strategy parameters; each of them
used to recompute the same signal (the complement edge, the momentum move, the BTC
lag) from the same cached books. A run keeps one ``SharedSignals``; each bot's cycle
asks it for the ``SignalBoard`` of the snapshot it read (its open markets and their
books, as the shared feed cache served them) and hands the board to its strategies in
``StrategyContext.signals``. A strategy that opts in (``Strategy.signal_key``) asks the
board for its signal with ``Strategy.shared``: the first bot of the snapshot computes
it, the others read it.

A signal must be a pure function of its key and of the snapshot, and must never be
changed by whoever reads it: then a shared signal is exactly what the bot would have
computed alone, and the trades are the same with sharing or without
(tests/test_shared_signals.py). A strategy that does not opt in is not asked.

The snapshot's identity is the identity of the objects read: the market objects and
the books of their outcomes, which the feed cache hands to every reader until the feed
moves (a tick, or a cached entry expiring and being fetched again). A board pins the
objects it was made from, so an identity cannot be reused while its board is kept.
Boards are kept most recently used first, at most ``max_boards``: a moved feed makes
new objects, new boards, and the old ones fall out.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any, TypeVar

from botpoly_admin.trading.market import Market, OrderBook

T = TypeVar("T")

MAX_BOARDS = 64  # snapshots kept: one per distinct set of watched markets, per feed move
MAX_SIGNALS = 4096  # signals kept per board; past it they are computed, not kept
MAX_VIEWS = 1024  # views kept: one per distinct set of watched markets


class SignalBoard:
    """The signals of one market snapshot (thread-safe)."""

    def __init__(self, markets: Sequence[Market], books: Mapping[str, OrderBook]) -> None:
        self._pinned = (tuple(markets), tuple(books.values()))  # their ids are the key
        self._lock = threading.Lock()
        self._signals: dict[Hashable, Any] = {}
        self.hits = 0
        self.computed = 0

    def get(self, key: Hashable, compute: Callable[[], T]) -> T:
        """The signal under *key*: computed by *compute* the first time, then shared.

        Two bots asking at once may both compute it (outside the lock: a signal may
        take a while); the first one kept is the one everyone gets, and both are equal.
        """
        with self._lock:
            if key in self._signals:
                self.hits += 1
                return self._signals[key]
        value = compute()
        with self._lock:
            self.computed += 1
            if key in self._signals:
                return self._signals[key]
            if len(self._signals) < MAX_SIGNALS:
                self._signals[key] = value
        return value


class SharedSignals:
    """The run's boards, one per snapshot (one per orchestrator process; thread-safe)."""

    def __init__(self, max_boards: int = MAX_BOARDS) -> None:
        self.max_boards = max_boards
        self._lock = threading.Lock()
        self._boards: OrderedDict[tuple[Any, ...], SignalBoard] = OrderedDict()
        self._views: OrderedDict[Hashable, tuple[int, Any]] = OrderedDict()

    def board(self, markets: Sequence[Market], books: Mapping[str, OrderBook]) -> SignalBoard:
        """The board of the snapshot made of *markets* and *books* (their objects)."""
        key = (tuple(map(id, markets)), tuple(map(id, books.values())), tuple(books))
        with self._lock:
            board = self._boards.get(key)
            if board is not None:
                self._boards.move_to_end(key)
                return board
            board = self._boards[key] = SignalBoard(markets, books)
            while len(self._boards) > self.max_boards:
                self._boards.popitem(last=False)
            return board

    def view(self, step: int, key: Hashable, read: Callable[[], T]) -> T:
        """What *read* makes of the feed at its *step* for *key* (a set of watched
        markets): read once per step and key for the whole run, for a feed that moves
        only in steps (``SharedMarketData.step_version``). What it returns is shared:
        nobody changes it. A reader at another step reads afresh."""
        with self._lock:
            kept = self._views.get(key)
            if kept is not None and kept[0] == step:
                return kept[1]
        value = read()
        with self._lock:
            self._views[key] = (step, value)
            self._views.move_to_end(key)
            while len(self._views) > MAX_VIEWS:
                self._views.popitem(last=False)
        return value

    def stats(self) -> dict[str, int]:
        """Boards kept, and their signals shared and computed (for benchmarks)."""
        with self._lock:
            boards = list(self._boards.values())
        return {"boards": len(boards), "hits": sum(b.hits for b in boards),
                "computed": sum(b.computed for b in boards)}
