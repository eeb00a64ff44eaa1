"""Recorded market data: the ``replay:PATH`` feed, and ``record`` that writes it.

File format: JSON lines, one object per line, in time order::

    {"ts": 1774166201606, "book": {...CLOB GET /book response, exactly as sent...}}
    {"ts": 1774166201606, "market": {...Gamma market object...}}
    {"ts": 1774166201606, "reference": {"symbol": "BTCUSDT", "price": "60123.45"}}

``ts`` is epoch milliseconds. Lines with the same ``ts`` form one snapshot.
The whole file is read and checked when the feed opens: a bad line is an
InvalidInput naming the file and line, nothing is skipped. Blank lines are
allowed (they carry nothing).

The feed starts at the first snapshot; each ``tick()`` applies the next one
and after the last it holds the final state. What it reports is always "as
of" the current snapshot: a market or book that appears later in the file is
not known yet.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from botpoly_admin import clock
from botpoly_admin.errors import BotpolyError, InvalidInput, NotFound
from botpoly_admin.trading.feeds.polymarket import market_from_gamma, market_to_gamma
from botpoly_admin.trading.market import Market, MarketData, OrderBook, ReferencePrice

KINDS = ("book", "market", "reference")


@dataclass(frozen=True)
class _Event:
    ts_ms: int
    value: OrderBook | Market | ReferencePrice


class ReplayFeed:
    """``MarketData`` from a file written by ``record``; thread-safe."""

    name = "replay"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._snapshots = _load(self.path)
        self._lock = threading.Lock()
        self._position = -1
        self._books: dict[str, OrderBook] = {}
        self._markets: dict[str, Market] = {}
        self._references: dict[str, ReferencePrice] = {}
        self._advance()

    @property
    def snapshots(self) -> int:
        """How many snapshots (distinct timestamps) the file holds."""
        return len(self._snapshots)

    @property
    def exhausted(self) -> bool:
        """True once the last snapshot is applied (further ticks change nothing)."""
        with self._lock:
            return self._position == len(self._snapshots) - 1

    def tick(self) -> None:
        """Move to the next snapshot; at the end, stay on the last."""
        with self._lock:
            self._advance()

    def markets(self) -> list[Market]:
        """Markets recorded so far, in the order first seen."""
        with self._lock:
            return list(self._markets.values())

    def market(self, market_id: str) -> Market:
        """One recorded market by id (condition id)."""
        with self._lock:
            try:
                return self._markets[market_id]
            except KeyError:
                raise NotFound(f"no such market: {market_id}") from None

    def book(self, token_id: str) -> OrderBook:
        """The latest recorded book of *token_id*."""
        with self._lock:
            try:
                return self._books[token_id]
            except KeyError:
                raise NotFound(f"no such market: {token_id}") from None

    def midpoint(self, token_id: str) -> Decimal | None:
        """Midpoint of the latest recorded book."""
        return self.book(token_id).midpoint

    def reference_price(self, symbol: str = "BTCUSDT") -> ReferencePrice:
        """The latest recorded reference price of *symbol*."""
        with self._lock:
            try:
                return self._references[symbol.upper()]
            except KeyError:
                raise NotFound(f"no reference price for {symbol} in {self.path}") from None

    def _advance(self) -> None:
        if self._position == len(self._snapshots) - 1:
            return
        self._position += 1
        for event in self._snapshots[self._position]:
            value = event.value
            if isinstance(value, OrderBook):
                self._books[value.token_id] = value
            elif isinstance(value, Market):
                self._markets[value.market_id] = value
            else:
                self._references[value.symbol] = value


def _load(path: Path) -> list[list[_Event]]:
    """Read and check the whole file; group its events into snapshots by ``ts``."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise NotFound(f"no such replay file: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"cannot read replay file {path}: {exc}") from None
    snapshots: list[list[_Event]] = []
    last_ts: int | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            event = _parse_line(line)
        except InvalidInput as exc:
            raise InvalidInput(f"{path}:{number}: {exc}") from None
        if last_ts is not None and event.ts_ms < last_ts:
            raise InvalidInput(
                f"{path}:{number}: goes back in time (ts {event.ts_ms} after {last_ts})"
            )
        if event.ts_ms != last_ts:
            snapshots.append([])
            last_ts = event.ts_ms
        snapshots[-1].append(event)
    if not snapshots:
        raise InvalidInput(f"{path}: no records (an empty replay file)")
    return snapshots


def _parse_line(line: str) -> _Event:
    try:
        record = json.loads(line)
    except ValueError:
        raise InvalidInput("not valid JSON") from None
    if not isinstance(record, dict):
        raise InvalidInput("expected a JSON object")
    ts = record.get("ts")
    if isinstance(ts, bool) or not isinstance(ts, int):
        raise InvalidInput("expected an integer 'ts' (epoch milliseconds)")
    kinds = [k for k in KINDS if k in record]
    if len(kinds) != 1 or not isinstance(record[kinds[0]], dict):
        raise InvalidInput("expected a 'book', 'market' or 'reference' object")
    kind = kinds[0]
    payload: dict[str, Any] = record[kind]
    if kind == "book":
        return _Event(ts, _parse_book(payload))
    if kind == "market":
        return _Event(ts, market_from_gamma(payload))
    return _Event(ts, _parse_reference(payload, ts))


def _parse_book(payload: dict[str, Any]) -> OrderBook:
    if not payload.get("asset_id"):
        raise InvalidInput("book without 'asset_id'")
    try:
        return OrderBook.from_clob(payload)
    except (KeyError, TypeError, ValueError, InvalidOperation) as exc:
        raise InvalidInput(f"malformed book: {type(exc).__name__}: {exc}") from None


def _parse_reference(payload: dict[str, Any], ts: int) -> ReferencePrice:
    symbol = payload.get("symbol")
    if not isinstance(symbol, str) or not symbol:
        raise InvalidInput("reference without 'symbol'")
    try:
        price = Decimal(str(payload["price"]))
    except (KeyError, InvalidOperation):
        raise InvalidInput("reference without a decimal 'price'") from None
    return ReferencePrice(symbol.upper(), price, ts_ms=ts)


# --- recording --------------------------------------------------------------


@dataclass(frozen=True)
class RecordSummary:
    """What one ``record`` run wrote."""

    path: str
    polls: int
    lines: int
    errors: int  # polls after the first that failed (and were skipped)
    last_error: str | None


def record(
    feed: MarketData,
    token_ids: Sequence[str],
    out_path: str | Path,
    duration_s: float,
    interval_s: float,
    stop_event: threading.Event | None = None,
    *,
    reference_symbols: Sequence[str] = (),
    monotonic: Callable[[], float] = time.monotonic,
) -> RecordSummary:
    """Poll *feed* every *interval_s* for *duration_s* and append replay lines to *out_path*.

    Each poll writes the raw CLOB book of every token (the feed must have
    ``raw_book``, as the polymarket and simulated feeds do) and the reference price
    of every symbol in *reference_symbols*. A feed that moves in steps (simulated)
    advances one step per poll. The markets the tokens belong to are written
    at the start and again at the end, so a resolution during the recording is
    in the file. A failure on the first poll is raised (wrong token, host down);
    later ones are counted and the recording goes on. *stop_event* ends it early
    (Ctrl-C in the CLI). The directory is created if needed.
    """
    raw_book = getattr(feed, "raw_book", None)
    if raw_book is None:
        raise InvalidInput(f"the {feed.name} feed cannot be recorded "
                           "(record from polymarket or simulated)")
    if not token_ids:
        raise InvalidInput("nothing to record: give at least one token id")
    if duration_s <= 0 or interval_s < 0:
        raise InvalidInput("duration must be positive and interval not negative")
    stop = stop_event or threading.Event()
    path = Path(out_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = _Writer(path)
    polls = errors = 0
    last_error: str | None = None
    market_ids: list[str] = []
    deadline = monotonic() + duration_s
    try:
        while True:
            started = monotonic()
            try:
                books = [raw_book(token_id) for token_id in token_ids]
                ts = writer.next_ts()
                if polls == 0:
                    market_ids = list(dict.fromkeys(str(b.get("market", "")) for b in books))
                    writer.markets(ts, feed, market_ids)
                writer.lines([{"ts": ts, "book": b} for b in books])
                writer.lines(_references(feed, reference_symbols, ts))
                step = getattr(feed, "tick", None)
                if step is not None:
                    step()
            except BotpolyError as exc:
                if polls == 0:
                    raise
                errors += 1
                last_error = str(exc)
            polls += 1
            if started + interval_s >= deadline or stop.wait(
                max(0.0, started + interval_s - monotonic())
            ):
                break
        try:
            writer.markets(writer.next_ts(), feed, market_ids)
        except BotpolyError as exc:
            errors += 1
            last_error = str(exc)
    finally:
        writer.close()
    return RecordSummary(str(path), polls, writer.count, errors, last_error)


def _references(feed: MarketData, symbols: Iterable[str], ts: int) -> list[dict[str, Any]]:
    rows = []
    for symbol in symbols:
        ref = feed.reference_price(symbol)
        rows.append({"ts": ts, "reference": {"symbol": ref.symbol, "price": str(ref.price)}})
    return rows


class _Writer:
    """Appends lines, flushed per poll so an interrupted recording keeps what it had."""

    def __init__(self, path: Path) -> None:
        self._file = path.open("a", encoding="utf-8")
        self._last_ts = 0
        self.count = 0

    def next_ts(self) -> int:
        # Strictly increasing, so each poll is its own snapshot even if the clock
        # is frozen (BOTPOLY_NOW) or steps back.
        now = int(clock.now().timestamp() * 1000)
        self._last_ts = max(now, self._last_ts + 1)
        return self._last_ts

    def lines(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            self._file.write(json.dumps(row, separators=(",", ":")) + "\n")
        self.count += len(rows)
        self._file.flush()

    def markets(self, ts: int, feed: MarketData, market_ids: Iterable[str]) -> None:
        rows = [{"ts": ts, "market": market_to_gamma(feed.market(m))} for m in market_ids if m]
        self.lines(rows)

    def close(self) -> None:
        self._file.close()
