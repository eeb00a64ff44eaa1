"""What the live-broker tests share: a live tenant, its broker, the neg-risk book, and
short readers of the ledger and of the requests the fake CLOB received.

A pytest plugin (conftest's ``pytest_plugins``), so its fixtures serve every test
module; the fake CLOB itself and the ``clob``, ``creds`` and ``signer`` fixtures are
in ``fake_exchange``.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from functools import partial
from typing import Any

import pytest
from factories import make_tenant
from fake_exchange import NEGRISK_TOKEN, FakeClob, FakeExchange, RecordedRequest

from botpoly_admin import ledger
from botpoly_admin.api import TenantManager
from botpoly_admin.trading.live import LiveBroker
from botpoly_admin.trading.live.clients import CLIENTS
from botpoly_admin.trading.market import OrderBook
from botpoly_admin.trading.orders import OrderIntent

# A paid, active tenant trading live (live@example.com, 1000 USD, 50 trades a day);
# give it its credentials with ``creds=``.
live_tenant = partial(make_tenant, name="Live Co", mode="live", capital=1000,
                      max_daily_trades=50)


@pytest.fixture(autouse=True)
def _no_idle_sdk_clients() -> Iterator[None]:
    """Each test ends as a stopping process does: the SDK clients that brokers gave
    back are closed (they would otherwise hold connections to a stopped fake)."""
    yield
    CLIENTS.close_all()


@pytest.fixture
def tenant(manager: TenantManager, secret_key: bytes, creds: dict[str, str]) -> str:
    """A live tenant holding the fake CLOB's account credentials."""
    return live_tenant(manager, creds=creds)


@pytest.fixture
def broker(manager: TenantManager, tenant: str, clob: FakeClob) -> Iterator[LiveBroker]:
    """The tenant's live broker (heartbeats every 50 ms), closed after the test."""
    live = LiveBroker.for_tenant(manager.store, tenant, timeout_s=1.0, heartbeat_s=0.05)
    yield live
    live.close()


@pytest.fixture
def book(fake_exchange: FakeExchange) -> OrderBook:
    """The neg-risk book: tick 0.01, bids up to 0.30, asks from 0.43 (8.37 shares)."""
    return OrderBook.from_clob(fake_exchange.books[NEGRISK_TOKEN])


def intent(side: str = "BUY", size: str = "10", price: str = "0.40", tif: str = "GTC",
           **kw: Any) -> OrderIntent:
    """An order on the neg-risk token (a fresh client order id unless given)."""
    return OrderIntent(token_id=NEGRISK_TOKEN, market_id="neg-risk", side=side,
                       size=Decimal(size), limit_price=Decimal(price), strategy="test",
                       time_in_force=tif, **kw)


def posts(exchange: FakeExchange) -> list[RecordedRequest]:
    """Every POST /order the exchange received."""
    return [r for r in exchange.requests_to("/order") if r.method == "POST"]


def quota(manager: TenantManager, tenant_id: str) -> tuple[int, int]:
    """(used, reserved) of the tenant's quota this period."""
    status = ledger.quota_status(manager.store, tenant_id)[0]
    return status["used"], status["reserved"]


def rows(manager: TenantManager, tenant_id: str) -> list[dict[str, Any]]:
    """The tenant's ledger rows, oldest first."""
    return sorted(ledger.list_trades(manager.store, tenant_id), key=lambda r: r["id"])
