"""A live tenant's Polymarket credentials, checked before any request.

``live_credentials`` is the only caller of ``TenantManager.get_credentials`` (the one
place that decrypts them). The plaintexts go to the SDK client's memory and never
reach a log line or an exception message. It refuses free tenants, tenants whose
trading_mode is paper and tenants with missing, undecryptable or malformed
credentials; ``bots.start_bots`` runs it too, so ``start-bot`` refuses such a tenant
up front with the same reason.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from botpoly_admin.errors import Conflict, CredentialsError
from botpoly_admin.models import CREDENTIAL_NAMES, TenantConfig, TenantTier, TradingMode
from botpoly_admin.secrets import credential_problem

if TYPE_CHECKING:
    from botpoly_admin.api import TenantManager

POLYMARKET_CREDENTIALS = tuple(n for n in CREDENTIAL_NAMES if n.startswith("polymarket_"))


def live_credentials(manager: TenantManager, tenant_id: str
                     ) -> tuple[TenantConfig, dict[str, str]]:
    """The tenant and its five Polymarket credentials, checked without any request.

    Raises NotFound, Conflict for a free tenant or one in paper mode, and
    CredentialsError (naming the tenant and what to fix) for missing, undecryptable
    or malformed credentials, or a secret key that does not match the database.
    """
    # credentials=False: resolve() would decrypt the masked credentials, and a
    # wrong key must fail below, in one message that names the tenant.
    tenant = manager.get_tenant(tenant_id, credentials=False) or manager.resolve(tenant_id)
    who = tenant.email
    if tenant.tier is TenantTier.FREE:
        raise Conflict(f"tenant {who} is on the free tier: free tenants trade paper only")
    if tenant.trading_mode is not TradingMode.LIVE:
        raise Conflict(f"tenant {who} trades {tenant.trading_mode.value}: "
                       "set its trading_mode to live to trade on Polymarket")
    try:
        stored = manager.get_credentials(tenant.tenant_id)
    except CredentialsError as exc:
        raise CredentialsError(
            f"cannot decrypt the credentials of tenant {who}: {exc}") from None
    missing = [name for name in POLYMARKET_CREDENTIALS if not stored.get(name)]
    if missing:
        raise CredentialsError(f"tenant {who} cannot trade live: missing {', '.join(missing)}")
    creds = {name: stored[name] for name in POLYMARKET_CREDENTIALS}
    _check_formats(creds, who)
    return tenant, creds


def _check_formats(creds: dict[str, str], who: str) -> None:
    """CredentialsError for a credential the SDK could not use; never echoes a value.

    The shapes are ``secrets.credential_problem``'s, the same ones ``credentials set``
    checks: a credential stored another way (the Python API, an old version) is caught
    here, before any request.
    """
    for name in POLYMARKET_CREDENTIALS:
        problem = credential_problem(name, creds[name])
        if problem:
            raise CredentialsError(f"{name} of tenant {who} {problem}")
