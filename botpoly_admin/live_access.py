"""Whether a tenant can trade live, and its Polymarket credentials to do so.

``live_credentials`` is the one place that decrypts a tenant's credentials
(``Vault.get``). The plaintexts go to the SDK client's memory and never reach a log
line or an exception message. It refuses free tenants, tenants whose trading_mode
is paper and tenants with missing, undecryptable or malformed credentials, without
any request. Both sides use it: ``bots.start_bots`` (so ``start-bot`` refuses such
a tenant up front) and the live broker (``trading.live``), which is why it sits
here, beside the vault and the tenants it reads, below both.
"""

from __future__ import annotations

from botpoly_admin import tenants
from botpoly_admin.errors import Conflict, CredentialsError
from botpoly_admin.models import CREDENTIAL_NAMES, TenantConfig, TenantTier, TradingMode
from botpoly_admin.secrets import credential_problem
from botpoly_admin.store import Store
from botpoly_admin.vault import Vault

POLYMARKET_CREDENTIALS = tuple(n for n in CREDENTIAL_NAMES if n.startswith("polymarket_"))


def live_credentials(store: Store, tenant_id: str) -> tuple[TenantConfig, dict[str, str]]:
    """The tenant and its five Polymarket credentials, checked without any request.

    *tenant_id* is an id, an email or an id prefix. Raises NotFound, Conflict for a
    free tenant or one in paper mode, and CredentialsError (naming the tenant and
    what to fix) for missing, undecryptable or malformed credentials, or a secret
    key that does not match the database.
    """
    # credentials=False: no masked view is needed, and a wrong key must fail below,
    # in one message that names the tenant.
    tenant = (tenants.get(store, tenant_id, credentials=False)
              or tenants.resolve(store, tenant_id))
    who = tenant.email
    if tenant.tier is TenantTier.FREE:
        raise Conflict(f"tenant {who} is on the free tier: free tenants trade paper only")
    if tenant.trading_mode is not TradingMode.LIVE:
        raise Conflict(f"tenant {who} trades {tenant.trading_mode.value}: "
                       "set its trading_mode to live to trade on Polymarket")
    try:
        stored = Vault(store).get(tenant.tenant_id)
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
