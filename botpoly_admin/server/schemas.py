"""Request bodies. Field names are those of the CLI's ``--json`` (``tenants show``).

Pydantic checks shapes and types (an unknown field, a wrong type: 422 naming the
field); the library checks values as it does for the CLI (a negative capital, an
unknown strategy: 422 with its message).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from botpoly_admin.models import CREDENTIAL_NAMES, TenantStatus, TenantTier, TradingMode
from botpoly_admin.secrets import MAX_SECRET_BYTES
from botpoly_admin.tenants import EMAIL_RE, MAX_TRIAL_DAYS

Secret = Annotated[str, StringConstraints(min_length=1, max_length=MAX_SECRET_BYTES)]
CredentialName = Literal[CREDENTIAL_NAMES]  # type: ignore[valid-type]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _email(value: str) -> str:
    if not EMAIL_RE.match(value.strip()):
        raise ValueError("malformed email address")
    return value


class TenantCreate(_Body):
    """``POST /tenants``: as ``create-tenant``. Self-signup takes name and email only
    (and ``tier`` "free"): it always makes a free tenant in trial."""

    name: str
    email: str
    tier: TenantTier = TenantTier.FREE
    status: TenantStatus | None = None
    trading_mode: TradingMode = TradingMode.PAPER
    capital: Decimal = Decimal(1000)
    max_position_size: Decimal = Decimal(100)
    max_daily_trades: int = 10
    enabled_strategies: list[str] | None = None
    markets: list[str] | None = None
    trial_days: int = Field(14, ge=0, le=MAX_TRIAL_DAYS)

    _check_email = field_validator("email")(_email)


SIGNUP_FIELDS = frozenset({"name", "email", "tier"})


class RateLimits(_Body):
    """Per-tenant overrides of the plan's rate limits."""

    api_calls_per_minute: int = Field(ge=1, le=1_000_000)


class TenantUpdate(_Body):
    """``PUT /tenants/{id}``: only the fields given change.

    A tenant may change its strategy, market and risk settings and its credentials
    (``TENANT_EDITABLE``); everything else is for admins. Credentials are write-only:
    in ``credentials`` (name → value, ``null`` clears it) or, as the guide sends
    them, as top-level fields.
    """

    enabled_strategies: list[str] | None = None
    strategy_params: dict[str, dict[str, Any]] | None = None
    markets: list[str] | None = None
    capital: Decimal | None = None
    max_position_size: Decimal | None = None
    max_daily_trades: int | None = None
    trading_mode: TradingMode | None = None
    daily_loss_limit: Decimal | None = None
    credentials: dict[CredentialName, Secret | None] | None = None
    # Admins only.
    name: str | None = None
    email: str | None = None
    tier: TenantTier | None = None
    status: TenantStatus | None = None
    rate_limits: RateLimits | None = None
    monthly_trades_quota: int | None = Field(None, ge=0)
    trial_ends_at: str | None = None
    settings: dict[str, str | None] | None = None
    # The guide's way of sending credentials: top-level fields.
    polymarket_private_key: Secret | None = None
    polymarket_wallet: Secret | None = None
    polymarket_api_key: Secret | None = None
    polymarket_api_secret: Secret | None = None
    polymarket_api_passphrase: Secret | None = None
    binance_api_key: Secret | None = None
    binance_secret: Secret | None = None

    @field_validator("email")
    @classmethod
    def _check_email(cls, value: str | None) -> str | None:
        return None if value is None else _email(value)


TENANT_EDITABLE = frozenset({
    "enabled_strategies", "strategy_params", "markets", "capital", "max_position_size",
    "max_daily_trades", "trading_mode", "daily_loss_limit", "credentials", *CREDENTIAL_NAMES,
})


class TenantPatch(_Body):
    """``PATCH /admin/tenants/{id}``: plan, quota, status (and rate limits, trial end).

    ``monthly_trades_quota``: a whole number, ``"unlimited"``, or ``"tier_default"``
    (or ``null``); ``rate_limits: null`` drops the override.
    """

    tier: TenantTier | None = None
    status: TenantStatus | None = None
    monthly_trades_quota: Annotated[int, Field(ge=0)] | Literal[
        "unlimited", "tier_default"] | None = None
    rate_limits: RateLimits | None = None
    trial_ends_at: str | None = None
