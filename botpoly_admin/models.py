"""Domain vocabulary: tiers, statuses, money units and the guide's dataclasses.

The tier table of docs/architecture.md lives here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from enum import Enum, StrEnum
from typing import Any

from botpoly_admin.errors import InvalidInput

MICRO = Decimal("0.000001")
MICROS_PER_UNIT = 1_000_000


class TenantTier(StrEnum):
    """Subscription plans. A StrEnum, so ``json.dumps`` writes its value."""

    FREE = "free"
    BASIC = "basic"
    PRO = "pro"
    ENTERPRISE = "enterprise"


class TenantStatus(StrEnum):
    """Account status. Bots run only for ACTIVE, or TRIAL before trial_ends_at."""

    ACTIVE = "active"
    SUSPENDED = "suspended"
    TRIAL = "trial"
    EXPIRED = "expired"


class TradingMode(StrEnum):
    """Paper trades on the simulated or recorded book; live sends real orders."""

    PAPER = "paper"
    LIVE = "live"


@dataclass(frozen=True)
class TierLimits:
    """What one plan includes. ``None`` means unlimited."""

    monthly_trades: int | None
    api_calls_per_minute: int
    storage_bytes: int | None
    price_usd: int


MB = 1_000_000
GB = 1_000_000_000

TIERS: dict[TenantTier, TierLimits] = {
    TenantTier.FREE: TierLimits(100, 10, 100 * MB, 0),
    TenantTier.BASIC: TierLimits(1_000, 50, 1 * GB, 29),
    TenantTier.PRO: TierLimits(10_000, 200, 10 * GB, 99),
    TenantTier.ENTERPRISE: TierLimits(None, 1_000, None, 499),
}

# The guide's PRICING constant, derived from the one table.
PRICING: dict[TenantTier, int] = {tier: limits.price_usd for tier, limits in TIERS.items()}

CREDENTIAL_NAMES: tuple[str, ...] = (
    "polymarket_private_key",
    "polymarket_wallet",
    "polymarket_api_key",
    "polymarket_api_secret",
    "polymarket_api_passphrase",
    "binance_api_key",
    "binance_secret",
)

# White-label and presentation settings a tenant may carry (stored in ``settings``).
SETTING_KEYS: tuple[str, ...] = (
    "custom_domain",
    "custom_logo",
    "brand_name",
    "support_email",
    "primary_color",
    "daily_loss_limit",
    "notes",
)


# The longest value each free-text field takes, in characters (README "Tenants, plans
# and quotas"): text is printed in tables and log lines, and kept in every audit row.
TEXT_LIMITS: dict[str, int] = {
    "name": 200,
    "email": 254,  # RFC 5321's limit on a forward path
    "custom_domain": 253,  # DNS's limit on a name
    "custom_logo": 2048,  # a URL
    "brand_name": 200,
    "support_email": 254,
    "primary_color": 32,
    "daily_loss_limit": 40,
    "notes": 2000,
    "market": 200,  # one market or token id (Polymarket's are 66-78 characters)
}
MAX_MARKETS = 100  # market ids per tenant


def quota_text(used: int, limit: int | None) -> str:
    """Trades used against a quota as every table shows it: ``78/10,000``, ``110/∞``."""
    return f"{used:,}/{'∞' if limit is None else f'{limit:,}'}"


def parse_tier(value: TenantTier | str) -> TenantTier:
    """Return the tier named by *value*, or raise InvalidInput listing the choices."""
    try:
        return TenantTier(value.value if isinstance(value, Enum) else str(value).strip().lower())
    except ValueError:
        choices = ", ".join(t.value for t in TenantTier)
        raise InvalidInput(f"unknown tier {value!r} (choose from {choices})") from None


def parse_status(value: TenantStatus | str) -> TenantStatus:
    """Return the status named by *value*, or raise InvalidInput listing the choices."""
    try:
        return TenantStatus(value.value if isinstance(value, Enum) else str(value).strip().lower())
    except ValueError:
        choices = ", ".join(s.value for s in TenantStatus)
        raise InvalidInput(f"unknown status {value!r} (choose from {choices})") from None


def parse_mode(value: TradingMode | str) -> TradingMode:
    """Return the trading mode named by *value* (paper or live)."""
    try:
        return TradingMode(value.value if isinstance(value, Enum) else str(value).strip().lower())
    except ValueError:
        raise InvalidInput(f"unknown trading mode {value!r} (choose from paper, live)") from None


def to_decimal(value: Any, what: str = "value") -> Decimal:
    """Convert a number or numeric string to Decimal, rejecting NaN, infinity and junk."""
    if isinstance(value, bool):
        raise InvalidInput(f"{what} must be a number, got {value!r}")
    try:
        number = Decimal(str(value).strip()) if not isinstance(value, Decimal) else value
    except (InvalidOperation, ValueError):
        raise InvalidInput(f"{what} must be a number, got {value!r}") from None
    if not number.is_finite():
        raise InvalidInput(f"{what} must be a finite number, got {value!r}")
    return number


# A trillion: far beyond any real capital, and its micro-units still fit SQLite's
# 64-bit integers (and Decimal's default precision).
MAX_AMOUNT = Decimal(10) ** 12
MAX_COUNT = 10**12


def to_micros(value: Any, what: str = "value") -> int:
    """Convert an amount to integer micro-units (6 decimals, banker's rounding)."""
    number = to_decimal(value, what)
    if abs(number) > MAX_AMOUNT:
        raise InvalidInput(f"{what} is too large (at most {MAX_AMOUNT:,}), got {value!r}")
    return int(number.quantize(MICRO, rounding=ROUND_HALF_EVEN) * MICROS_PER_UNIT)


def from_micros(micros: int | None) -> Decimal | None:
    """Convert integer micro-units back to a Decimal with 6 places (None stays None)."""
    if micros is None:
        return None
    return Decimal(int(micros)).scaleb(-6)  # exact: only the exponent moves


@dataclass
class TenantConfig:
    """A tenant as the guide's code knows it; credentials appear masked, never in clear."""

    tenant_id: str
    name: str
    email: str
    tier: TenantTier = TenantTier.FREE
    status: TenantStatus = TenantStatus.TRIAL
    trading_mode: TradingMode = TradingMode.PAPER
    capital: Decimal = Decimal("1000")
    max_position_size: Decimal = Decimal("100")
    max_daily_trades: int = 10
    enabled_strategies: list[str] = field(default_factory=list)
    strategy_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    markets: list[str] = field(default_factory=list)
    rate_limits: dict[str, int] = field(default_factory=dict)
    monthly_trades_quota: int | None = 100
    monthly_trades_quota_override: int | None = None
    monthly_trades_unlimited: bool = False
    monthly_trades_used: int = 0
    settings: dict[str, Any] = field(default_factory=dict)
    trial_ends_at: str | None = None
    created_at: str = ""
    updated_at: str = ""
    last_active: str | None = None
    credentials: dict[str, str | None] = field(default_factory=dict)

    @property
    def limits(self) -> TierLimits:
        """The tier's limits."""
        return TIERS[self.tier]

    @property
    def api_calls_per_minute(self) -> int:
        """Effective calls/minute: the per-tenant override or the tier default."""
        return int(self.rate_limits.get("api_calls_per_minute", self.limits.api_calls_per_minute))

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape of a tenant (see README, ``tenants show --json``).

        Amounts stay ``Decimal``; ``botpoly_admin.cli.render.to_json`` writes them as
        JSON numbers (use ``json.dumps(..., default=str)`` for strings instead).
        """
        # Field by field with shallow copies: dataclasses.asdict deep-copies, which
        # dominates a 10,000-tenant listing.
        return {
            "tenant_id": self.tenant_id, "name": self.name, "email": self.email,
            "tier": self.tier.value, "status": self.status.value,
            "trading_mode": self.trading_mode.value, "capital": self.capital,
            "max_position_size": self.max_position_size,
            "max_daily_trades": self.max_daily_trades,
            "enabled_strategies": list(self.enabled_strategies),
            "strategy_params": {k: dict(v) for k, v in self.strategy_params.items()},
            "markets": list(self.markets),
            "rate_limits": dict(self.rate_limits),
            "monthly_trades_quota": self.monthly_trades_quota,
            "monthly_trades_used": self.monthly_trades_used, "settings": dict(self.settings),
            "trial_ends_at": self.trial_ends_at, "created_at": self.created_at,
            "updated_at": self.updated_at, "last_active": self.last_active,
            "credentials": dict(self.credentials),
        }


@dataclass
class TenantMetrics:
    """Per-tenant performance and resource use (the guide's TenantMetrics, correctly computed)."""

    tenant_id: str
    total_trades: int = 0
    successful_trades: int = 0
    failed_trades: int = 0
    fill_rate: float | None = None
    round_trips: int = 0
    winning_round_trips: int = 0
    win_rate: float | None = None
    realized_pnl: Decimal = Decimal("0")
    unrealized_pnl: Decimal = Decimal("0")
    total_pnl: Decimal = Decimal("0")
    sharpe_ratio: float | None = None
    max_drawdown: float = 0.0
    max_drawdown_usd: Decimal = Decimal("0")
    max_drawdown_start: str | None = None
    max_drawdown_end: str | None = None
    api_calls: int = 0
    compute_time_seconds: float = 0.0
    storage_bytes: int = 0
    period: str = ""

    def to_dict(self) -> dict[str, Any]:
        """A plain dict for rendering and JSON."""
        return asdict(self)


def effective_quota(row: Mapping[str, Any]) -> int | None:
    """Monthly trade quota of a tenant row: override, else tier default (None = unlimited)."""
    if row["quota_unlimited"]:
        return None
    if row["monthly_trades_quota"] is not None:
        return int(row["monthly_trades_quota"])
    return TIERS[TenantTier(row["tier"])].monthly_trades
