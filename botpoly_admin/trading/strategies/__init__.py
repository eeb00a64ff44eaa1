"""The strategy interface and the registry of strategies.

A strategy is a class: a name, a version, typed parameters with defaults, and
one method called every cycle that turns a read-only ``StrategyContext`` into
order intents. Optional callbacks (``on_start``, ``on_fill``) have do-nothing
defaults, so a strategy overrides only what it needs. Two more are optional, for
cheaper cycles: ``signal_key`` lets a run compute a market-level signal once per
snapshot for every tenant (``shared``), and ``quiet_until`` lets an idle bot skip its
cycles while nothing changes (``trading/idle.py``); without them a strategy runs
every cycle as it always did.

Every strategy, built-in or third-party, is found through the entry-point
group ``botpoly_admin.strategies``; the built-ins are declared in this
package's own ``pyproject.toml`` exactly as a plugin would declare its own, so
the extension point is exercised on every run. A plugin that fails to load is
reported (logged, and listed by ``discover_strategies``), never fatal.

Writing a plugin::

    # my_pkg/fade.py
    from decimal import Decimal

    from botpoly_admin.trading.orders import OrderIntent
    from botpoly_admin.trading.strategies import Param, Strategy, StrategyContext

    class Fade(Strategy):
        name = "fade"
        version = "1.0"
        description = "Sells what just jumped."
        parameters = {"threshold": Param(Decimal("0.05"), Decimal, min=0, max=1, help="...")}

        def on_cycle(self, ctx: StrategyContext) -> list[OrderIntent]:
            ...

    # my_pkg's pyproject.toml
    [project.entry-points."botpoly_admin.strategies"]
    fade = "my_pkg.fade:Fade"
"""

from __future__ import annotations

import functools
import inspect
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_DOWN, Decimal
from importlib.metadata import entry_points
from types import MappingProxyType
from typing import Any, ClassVar, TypeVar

from botpoly_admin.errors import InvalidInput
from botpoly_admin.models import to_decimal
from botpoly_admin.trading.market import FeeSchedule, Market, OrderBook, ReferencePrice
from botpoly_admin.trading.orders import ExecutionResult, OrderIntent
from botpoly_admin.trading.rules import SHARE_STEP
from botpoly_admin.trading.signals import SignalBoard

T = TypeVar("T")

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "botpoly_admin.strategies"

# The version of the contract between the engine and strategies (context fields,
# callbacks, intent shape). Bumped on an incompatible change; a plugin written
# for another version is reported instead of being run against a contract it
# does not know.
INTERFACE_VERSION = 2  # 2: fees are each market's ``Market.fees``, no ``ctx.fee_rate``

# What ``Strategy.quiet_until`` answers for "until something changes".
FOREVER = datetime.max.replace(tzinfo=UTC)

_PARAM_TYPES = (int, Decimal, bool, str)
_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})


@dataclass(frozen=True)
class Param:
    """One strategy parameter: its default, type, allowed range or choices, and help.

    ``type`` is one of int, Decimal, bool, str (no float: prices and money are
    Decimal everywhere). ``min``/``max`` are inclusive; ``min_why`` says why the
    minimum is what it is (e.g. the exchange's minimum order), for the error.
    """

    default: Any
    type: type = Decimal
    min: Decimal | int | None = None
    max: Decimal | int | None = None
    choices: tuple[Any, ...] | None = None
    help: str = ""
    min_why: str = ""

    def __post_init__(self) -> None:
        if self.type not in _PARAM_TYPES:
            raise TypeError(f"Param type must be one of int, Decimal, bool, str; got {self.type}")

    def coerce(self, value: Any) -> Any:
        """Return *value* as this parameter's type, or raise ValueError saying why not."""
        converted = self._convert(value)
        if self.min is not None and converted < self.min:
            why = f" ({self.min_why})" if self.min_why else ""
            raise ValueError(f"must be at least {self.min}{why}, got {value!r}")
        if self.max is not None and converted > self.max:
            raise ValueError(f"must be at most {self.max}, got {value!r}")
        if self.choices is not None and converted not in self.choices:
            raise ValueError(f"must be one of {', '.join(map(str, self.choices))}, got {value!r}")
        return converted

    def _convert(self, value: Any) -> Any:
        if self.type is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in _TRUE or text in _FALSE:
                return text in _TRUE
            raise ValueError(f"must be true or false, got {value!r}")
        if self.type is str:
            if not isinstance(value, str):
                raise ValueError(f"must be text, got {value!r}")
            return value
        # bool is an int subclass: True must not pass for a count or a price.
        if isinstance(value, bool):
            raise ValueError(f"must be a number, got {value!r}")
        try:
            number = to_decimal(value)
        except InvalidInput:
            raise ValueError(f"must be a number, got {value!r}") from None
        if self.type is int:
            if number != number.to_integral_value():
                raise ValueError(f"must be a whole number, got {value!r}")
            return int(number)
        return number


@dataclass(frozen=True)
class PositionView:
    """What a strategy sees of one open position."""

    token_id: str
    shares: Decimal
    avg_cost: Decimal  # pUSD per share: cost basis / shares
    opened_at: datetime | None = None

    @property
    def cost_basis(self) -> Decimal:
        """Shares × average cost: the notional this position ties up."""
        return self.shares * self.avg_cost


@dataclass(frozen=True)
class StrategyContext:
    """Everything one strategy sees in one cycle of one tenant's bot.

    Read-only, except ``state``: a dict the bot keeps for this strategy of this
    tenant between cycles (price histories and the like). It belongs to that
    one strategy instance and is never shared.

    ``positions`` are this strategy's own: a position belongs to the strategy that
    opened it, and a strategy sells only what it holds. ``market_notional`` is the
    tenant's whole exposure per market (every strategy's positions and resting buys),
    which ``max_position_notional`` limits. ``may_open`` is False while the tenant
    may not take new exposure (a daily loss or daily trades halt, or the quota left
    only for closing its positions): exits and rebalancing still pass then.
    ``signals`` is the run's board of market-level signals for exactly these markets
    and books (None when the bot runs alone, or for a context of other books): read
    it through ``Strategy.shared``.
    """

    now: datetime
    markets: Sequence[Market]
    books: Mapping[str, OrderBook]  # token_id → book
    reference_prices: Mapping[str, ReferencePrice]  # symbol → price, e.g. "BTCUSDT"
    positions: Mapping[str, PositionView]  # token_id → open position
    free_cash: Decimal
    max_position_notional: Decimal  # per market
    state: dict[str, Any] = field(default_factory=dict)
    market_notional: Mapping[str, Decimal] = field(default_factory=dict)
    may_open: bool = True
    signals: SignalBoard | None = None

    def __post_init__(self) -> None:
        if self.now.tzinfo is None or self.now.utcoffset() != timedelta(0):
            raise InvalidInput(f"strategy context time must be aware UTC, got {self.now!r}")
        # Copies behind read-only views: a strategy cannot change what the bot,
        # the risk checks or the next strategy see.
        object.__setattr__(self, "markets", tuple(self.markets))
        for name in ("books", "reference_prices", "positions", "market_notional"):
            object.__setattr__(self, name, MappingProxyType(dict(getattr(self, name))))

    def position(self, token_id: str) -> PositionView | None:
        """The open position in *token_id*, or None when flat."""
        position = self.positions.get(token_id)
        return position if position is not None and position.shares > 0 else None

    def position_room(self, market: Market) -> Decimal:
        """Notional still allowed in *market* under max_position_notional (never
        negative): the limit is the tenant's, so every strategy's exposure counts."""
        own = Decimal(0)
        for outcome in market.outcomes:
            position = self.positions.get(outcome.token_id)
            if position is not None and position.shares > 0:
                own += position.cost_basis
        used = max(own, self.market_notional.get(market.market_id, Decimal(0)))
        return max(Decimal(0), self.max_position_notional - used)


def tradable(market: Market) -> bool:
    """True for a market that is open for trading and not resolved."""
    # Every strategy asks this of every market every cycle: the fields, not the property.
    return market.active and not market.closed and market.winner_token_id is None


def two_sided_quote(book: OrderBook | None) -> tuple[Decimal, Decimal] | None:
    """(best bid, best ask) when both sides are quoted, else None.

    Strategies that track price moves use this rather than ``OrderBook.midpoint``:
    a one-sided book's "midpoint" is just its lone best price (a 0.999 ask with
    no bids reads as 0.999), which would look like a jump.
    """
    if book is None or not book.bids or not book.asks:
        return None
    return book.bids[0].price, book.asks[0].price


def buy_cost(price: Decimal, shares: Decimal, fees: FeeSchedule) -> Decimal:
    """Cash a taker BUY of *shares* at *price* needs under the market's *fees*."""
    return price * shares + fees.taker_fee(price, shares)


def affordable_shares(budget: Decimal, price: Decimal, fees: FeeSchedule) -> Decimal:
    """Most shares (in SHARE_STEP units) a BUY at *price* can take for *budget*, fee included.

    Rounded down, so the cost never exceeds the budget.
    """
    if budget <= 0:
        return Decimal(0)
    per_share = price + fees.taker_fee(price, Decimal(1))
    shares = (budget / per_share).quantize(SHARE_STEP, rounding=ROUND_DOWN)
    # The fee rounds up per fill, so the estimate can be a few micro-units short: step down.
    while shares > 0 and buy_cost(price, shares, fees) > budget:
        shares -= SHARE_STEP
    return shares


class Strategy(ABC):
    """Base class of every strategy (freqtrade's IStrategy, in small).

    Subclasses set ``name`` (the entry-point name), ``version`` (the
    strategy's own version, recorded with its trades), ``description`` and
    ``parameters``, and implement ``on_cycle``. ``interface_version`` says
    which engine contract the class was written for.
    """

    interface_version: ClassVar[int] = INTERFACE_VERSION
    name: ClassVar[str] = ""
    version: ClassVar[str] = "0"
    description: ClassVar[str] = ""
    parameters: ClassVar[Mapping[str, Param]] = {}

    def __init__(self, params: Mapping[str, Any] | None = None) -> None:
        self.params: dict[str, Any] = self.validate_params(params or {})

    @classmethod
    def validate_params(cls, params: Mapping[str, Any]) -> dict[str, Any]:
        """Return the defaults overlaid with *params*, each converted and checked.

        Raises InvalidInput with one line naming the strategy and the parameter.
        """
        if not isinstance(params, Mapping):
            raise InvalidInput(f"strategy {cls.name!r}: parameters must be a mapping")
        unknown = sorted(set(params) - set(cls.parameters))
        if unknown:
            known = ", ".join(sorted(cls.parameters)) or "none"
            raise InvalidInput(
                f"strategy {cls.name!r} has no parameter {unknown[0]!r} (parameters: {known})"
            )
        merged: dict[str, Any] = {}
        for key, param in cls.parameters.items():
            value = params.get(key, param.default)
            try:
                merged[key] = param.coerce(value)
            except ValueError as exc:
                raise InvalidInput(f"strategy {cls.name!r}: parameter {key!r} {exc}") from None
        return merged

    # Optional callbacks: deliberately empty, not abstract (hence the noqa).
    def on_start(self, ctx: StrategyContext) -> None:  # noqa: B027
        """Called once before the first cycle (after a restart too). Default: nothing."""

    @abstractmethod
    def on_cycle(self, ctx: StrategyContext) -> list[OrderIntent]:
        """Return the orders this strategy wants now (an empty list for none)."""

    def on_fill(self, ctx: StrategyContext, result: ExecutionResult) -> None:  # noqa: B027
        """Called after each execution of one of its intents, filled or not. Default: nothing."""

    def signal_key(self) -> Hashable | None:
        """What decides this strategy's market-level signal besides the snapshot: the
        parameters it depends on (frozen, hashable). A strategy that returns a key
        may share its signal across tenants with ``shared``. Default: None (no
        shared signal; ``shared`` computes every time)."""
        return None

    def shared(self, ctx: StrategyContext, compute: Callable[[], T], *extra: Hashable) -> T:
        """The signal *compute* returns for ``ctx``'s snapshot, computed once per
        snapshot and key (``signal_key`` plus *extra*, e.g. the state it continues) for
        every tenant of the run. *compute* must read only the snapshot (``ctx.markets``,
        ``ctx.books``, ``ctx.reference_prices``) and what the key holds, never the
        tenant (positions, cash, ``may_open``), and its result is never changed by
        whoever reads it."""
        key = self.signal_key()
        if ctx.signals is None or key is None:
            return compute()
        return ctx.signals.get((type(self), key, *extra), compute)

    def quiet_until(self, ctx: StrategyContext) -> datetime | None:
        """Asked after a cycle in which no strategy of the tenant proposed anything, with
        this cycle's context: until when, while the snapshot, the tenant's positions
        and its cash stay exactly as they are, this strategy would again propose
        nothing *and* leave its state as it is (``datetime.max``: until something
        changes). The bot skips its cycles until then (an idle bot). Default: None
        (it cannot promise; the bot never skips a cycle of a tenant running it)."""
        return None

    def reference_symbols(self) -> frozenset[str]:
        """Reference prices (e.g. BTCUSDT) this strategy reads from the context. The bot
        fetches only what some enabled strategy needs; a strategy whose reference is
        missing sits the cycle out (logged) while the others trade. Default: none."""
        return frozenset()

    def even_out(self, ctx: StrategyContext, market: Market) -> list[OrderIntent]:
        """Orders that bring this strategy's grouped positions in *market* back in line
        after a group's legs filled unequally (``ctx.positions`` is fresh). The bot
        asks right after such a group, first as given and then, if a mismatch remains,
        with ``may_open`` False (exits only). Default: nothing (no grouped orders)."""
        return []


@dataclass(frozen=True)
class PluginError:
    """A strategy entry point that could not be used, and why."""

    name: str
    target: str  # "module:attribute" as declared
    error: str


@dataclass(frozen=True)
class StrategyCatalog:
    """The result of reading the entry-point group: usable strategies and broken ones."""

    strategies: dict[str, type[Strategy]]
    errors: tuple[PluginError, ...]


def discover_strategies() -> StrategyCatalog:
    """Load every entry point of ``botpoly_admin.strategies``, keeping the failures apart."""
    found: dict[str, type[Strategy]] = {}
    errors: list[PluginError] = []
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name):
        try:
            loaded = ep.load()
            _check_strategy_class(ep.name, loaded)
        except Exception as exc:  # a third-party import can raise anything; report it, go on
            errors.append(PluginError(ep.name, ep.value, f"{type(exc).__name__}: {exc}"))
            continue
        if ep.name in found:
            errors.append(PluginError(ep.name, ep.value, "name already registered by another"))
            continue
        found[ep.name] = loaded
    return StrategyCatalog(found, tuple(errors))


def _check_strategy_class(entry_name: str, obj: object) -> None:
    if not (inspect.isclass(obj) and issubclass(obj, Strategy)):
        raise TypeError("not a Strategy subclass")
    if inspect.isabstract(obj):
        raise TypeError("does not implement on_cycle")
    if obj.name != entry_name:
        raise ValueError(f"class name attribute is {obj.name!r}, entry point is {entry_name!r}")
    if obj.interface_version != INTERFACE_VERSION:
        raise ValueError(
            f"written for strategy interface {obj.interface_version}, "
            f"this botpoly-admin provides {INTERFACE_VERSION}"
        )
    obj.validate_params({})  # defaults that fail their own checks make the plugin unusable


def load_strategies() -> dict[str, type[Strategy]]:
    """Every usable strategy by name; each broken plugin is logged as a warning and skipped."""
    catalog = discover_strategies()
    for error in catalog.errors:
        log.warning("strategy plugin %r (%s) not loaded: %s", error.name, error.target, error.error)
    return catalog.strategies


@functools.lru_cache(maxsize=1)
def _installed() -> StrategyCatalog:
    # Reading entry points scans every installed package (milliseconds): once per
    # process for bots; `strategies list` and validation read them afresh.
    return discover_strategies()


def get_strategy(name: str) -> type[Strategy]:
    """The strategy class called *name*; InvalidInput naming the available ones otherwise."""
    catalog = _installed()
    if name not in catalog.strategies:  # installed since the cache was filled?
        _installed.cache_clear()
        catalog = _installed()
    return _lookup(catalog, name)


def _lookup(catalog: StrategyCatalog, name: str) -> type[Strategy]:
    if name in catalog.strategies:
        return catalog.strategies[name]
    for error in catalog.errors:
        if error.name == name:
            raise InvalidInput(f"strategy {name!r} failed to load: {error.error}")
    available = ", ".join(sorted(catalog.strategies)) or "none"
    raise InvalidInput(f"unknown strategy {name!r} (available: {available})")


def validate_strategy_config(
    names: Iterable[str], params: Mapping[str, Mapping[str, Any]] | None = None
) -> dict[str, dict[str, Any]]:
    """Check a tenant's enabled strategies and their parameters; return the effective config.

    Returns ``{name: full validated parameters}`` for each enabled strategy, in
    the given order, duplicates dropped. Parameters for a strategy that is not
    enabled are refused rather than silently kept or dropped.
    """
    params = params or {}
    catalog = discover_strategies()
    enabled = list(dict.fromkeys(name.strip() for name in names))
    classes = {name: _lookup(catalog, name) for name in enabled}
    stray = sorted(set(params) - set(enabled))
    if stray:
        raise InvalidInput(f"parameters given for strategy {stray[0]!r}, which is not enabled")
    return {name: cls.validate_params(params.get(name, {})) for name, cls in classes.items()}
