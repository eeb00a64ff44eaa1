"""``markets`` group: look at market data and record it for replay."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from botpoly_admin.cli.app import App, FiniteFloat, output_options, pass_app, refuse_store_file
from botpoly_admin.trading.market import Market, MarketData, OrderBook

FEED_HELP = "simulated, polymarket, binance or replay:PATH."

LIST_COLUMNS = [
    ("market_id", "Market"),
    ("kind", "Kind"),
    ("status", "Status"),
    ("question", "Question"),
    ("outcome_1", "Outcome 1"),
    ("token_1", "Token 1"),
    ("outcome_2", "Outcome 2"),
    ("token_2", "Token 2"),
    ("ends_at", "Ends"),
]
BOOK_COLUMNS = [("bid_size", "Bid size"), ("bid", "Bid"), ("ask", "Ask"), ("ask_size", "Ask size")]
RECORD_COLUMNS = [("path", "File"), ("polls", "Polls"), ("lines", "Lines written"),
                  ("errors", "Failed polls"), ("last_error", "Last error"),
                  ("stopped_early", "Stopped early")]


@contextmanager
def _progress(duration: float) -> Iterator[Callable[[], None]]:
    """A progress bar of the recording's time on stderr, on a terminal only (a log file
    or a pipe gets the summary alone); yields the function that redraws it."""
    if not sys.stderr.isatty():
        yield lambda: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    started = time.monotonic()
    with Progress(TextColumn("Recording"), BarColumn(),
                  TextColumn("{task.completed:.0f}/{task.total:.0f} s"), TimeRemainingColumn(),
                  console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task("record", total=duration)
        yield lambda: progress.update(task, completed=min(time.monotonic() - started,
                                                          duration))


@contextmanager
def _feed(spec: str, seed: int) -> Iterator[MarketData]:
    """Open a feed for one command and close its connections afterwards."""
    from botpoly_admin.trading.feeds import open_feed

    feed = open_feed(spec, seed=seed)
    try:
        yield feed
    finally:
        close = getattr(feed, "close", None)
        if close is not None:
            close()


def _iso_ms(ts_ms: int | None) -> str | None:
    if not ts_ms:
        return None
    return datetime.fromtimestamp(ts_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _market_row(market: Market) -> dict[str, Any]:
    winner = next((o.label for o in market.outcomes if o.token_id == market.winner_token_id),
                  None)
    status = f"resolved: {winner}" if winner else "closed" if market.closed else "open"
    first, second = market.outcomes
    return {
        "market_id": market.market_id,
        "kind": market.kind,
        "status": status,
        "question": market.question,
        "outcome_1": first.label,
        "token_1": first.token_id,
        "outcome_2": second.label,
        "token_2": second.token_id,
        "ends_at": _iso_ms(market.end_ts_ms),
    }


def _book_data(book: OrderBook, depth: int) -> dict[str, Any]:
    bids = book.bids[:depth] if depth else book.bids
    asks = book.asks[:depth] if depth else book.asks
    return {
        "token_id": book.token_id,
        "market": book.market,
        "time": _iso_ms(book.ts_ms),
        "tick_size": book.tick_size,
        "best_bid": book.best_bid,
        "best_ask": book.best_ask,
        "midpoint": book.midpoint,
        "bids": [{"price": lv.price, "size": lv.size} for lv in bids],
        "asks": [{"price": lv.price, "size": lv.size} for lv in asks],
    }


def _book_rows(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Bids and asks side by side, best first: one row per level."""
    rows = []
    for i in range(max(len(data["bids"]), len(data["asks"]))):
        bid = data["bids"][i] if i < len(data["bids"]) else {}
        ask = data["asks"][i] if i < len(data["asks"]) else {}
        rows.append({"bid_size": bid.get("size"), "bid": bid.get("price"),
                     "ask": ask.get("price"), "ask_size": ask.get("size")})
    return rows


@click.group("markets")
def markets_group() -> None:
    """Look at market data (simulated, Polymarket, Binance, replay) and record it.

    \b
    Example:
        botpoly-admin markets list --feed simulated
        botpoly-admin markets book sim-0-yes
    """


@markets_group.command("list")
@click.option("--feed", "feed_spec", default="simulated", show_default=True, help=FEED_HELP)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the simulation.")
@output_options(csv=True)
@pass_app
def list_(app: App, feed_spec: str, seed: int, fmt: str) -> None:
    """List the markets a feed offers, with their outcome token ids.

    The polymarket feed lists the open markets with the most 24-hour volume.

    \b
    Example:
        botpoly-admin markets list --feed simulated --json
        botpoly-admin markets list --feed polymarket --csv > markets.csv
    """
    with _feed(feed_spec, seed) as feed:
        rows = [_market_row(m) for m in feed.markets()]
    app.render(rows, fmt, columns=LIST_COLUMNS if fmt != "json" else None,
               title=f"Markets ({feed_spec})", empty="no markets")


@markets_group.command("book")
@click.argument("token_id")
@click.option("--feed", "feed_spec", default="simulated", show_default=True, help=FEED_HELP)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the simulation.")
@click.option("--depth", type=click.IntRange(min=0), default=10, show_default=True,
              help="Levels per side (0: all).")
@output_options()
@pass_app
def book(app: App, token_id: str, feed_spec: str, seed: int, depth: int, fmt: str) -> None:
    """Show one outcome token's order book, best prices first.

    \b
    Example:
        botpoly-admin markets book sim-0-yes
        botpoly-admin markets book 9424...0261 --feed polymarket --json
    """
    with _feed(feed_spec, seed) as feed:
        data = _book_data(feed.book(token_id), depth)
    if fmt == "json":
        app.render(data, fmt)
        return
    title = f"{token_id} (mid {data['midpoint'] or '-'})"
    app.render(_book_rows(data), fmt, columns=BOOK_COLUMNS, title=title, empty="empty book")


@markets_group.command("record")
@click.option("--feed", "feed_spec", default="polymarket", show_default=True,
              help="Where to record from: polymarket, or simulated (one step per poll).")
@click.option("--token", "tokens", multiple=True, metavar="ID",
              help="Outcome token to record (repeatable).")
@click.option("--markets", "auto", type=click.Choice(["auto"]),
              help="'auto' (the default without --token): both outcomes of the feed's "
                   "top markets.")
@click.option("--limit", type=click.IntRange(min=1), default=5, show_default=True,
              help="How many markets --markets auto takes.")
@click.option("--duration", type=FiniteFloat(min=1), default=600, show_default=True,
              help="Seconds to record.")
@click.option("--interval", type=FiniteFloat(min=0.2), default=5, show_default=True,
              help="Seconds between polls.")
@click.option("--reference", "symbols", multiple=True, metavar="SYMBOL",
              help="Also record this reference price, e.g. BTCUSDT (repeatable).")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False),
              help="JSON-lines file to append to (created with its directory).")
@output_options()
@pass_app
def record_(app: App, feed_spec: str, tokens: tuple[str, ...], auto: str | None, limit: int,
            duration: float, interval: float, symbols: tuple[str, ...], out_path: str,
            fmt: str) -> None:
    """Record live books (and markets, reference prices) to a file for --feed replay:PATH.

    Ctrl-C stops early and keeps what was recorded.

    \b
    Example:
        botpoly-admin markets record --feed polymarket --duration 600 \\
            --out data/replay/x.jsonl --markets auto --reference BTCUSDT
        botpoly-admin markets list --feed replay:data/replay/x.jsonl
        botpoly-admin markets record --feed simulated --duration 30 --interval 1 \\
            --out data/replay/sim.jsonl
    """
    from botpoly_admin.trading.feeds.replay import record

    if tokens and auto:
        raise click.UsageError("give either --token ID (repeatable) or --markets auto")
    refuse_store_file(app, Path(out_path), "--out")
    auto = auto or ("auto" if not tokens else None)
    with _feed(feed_spec, seed=0) as feed:
        if auto:
            markets = [m for m in feed.markets() if not m.closed][:limit]
            tokens = tuple(o.token_id for m in markets for o in m.outcomes)
        app.say(f"Recording {len(tokens)} tokens every {interval:g} s for {duration:g} s "
                f"into {out_path} (Ctrl-C stops).")
        stop = threading.Event()
        outcome: dict[str, Any] = {}

        def run() -> None:
            try:
                outcome["summary"] = record(feed, tokens, out_path, duration, interval, stop,
                                            reference_symbols=symbols)
            except BaseException as exc:  # re-raised in the command's thread below
                outcome["error"] = exc

        # Recording runs in a thread so Ctrl-C here can stop it between polls
        # instead of tearing a write in half.
        worker = threading.Thread(target=run, name="markets-record")
        worker.start()
        try:
            with _progress(duration) as advance:
                while worker.is_alive():
                    worker.join(0.2)
                    advance()
        except KeyboardInterrupt:
            stop.set()
            worker.join()
    if "error" in outcome:
        raise outcome["error"]
    summary = outcome["summary"]
    row = {**asdict(summary), "stopped_early": stop.is_set()}
    app.render(row, fmt, columns=RECORD_COLUMNS if fmt != "json" else None,
               title="Recording")
