"""Tenant-scoped access: the one path to a tenant's rows in tenant-owned tables."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlite_utils

from botpoly_admin.errors import InvalidInput
from botpoly_admin.store.sql import select

# Tables whose rows belong to one tenant: reached only through TenantScope.
TENANT_TABLES = (
    "credentials",
    "usage",
    "daily_usage",
    "trades",
    "positions",
    "equity_snapshots",
    "bots",
    "reservations",
    "order_intents",
    "live_reconciliations",
    "live_redemptions",
)


class TenantScope:
    """The one access path to tenant-owned rows: every query is filtered by tenant_id."""

    def __init__(self, db: sqlite_utils.Database, tenant_id: str) -> None:
        if not tenant_id:
            raise InvalidInput("a tenant id is required")
        self.db = db
        self.tenant_id = tenant_id

    def _check(self, table: str) -> None:
        if table not in TENANT_TABLES:
            raise InvalidInput(f"{table} is not a tenant-owned table")

    def rows(
        self,
        table: str,
        where: str = "",
        params: Mapping[str, Any] | None = None,
        *,
        order_by: str | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Rows of *table* belonging to this tenant, with an optional extra filter."""
        self._check(table)
        sql = f'SELECT * FROM "{table}" WHERE tenant_id = :tenant_id'
        if where:
            sql += f" AND ({where})"
        if order_by:
            sql += f" ORDER BY {order_by}"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return select(self.db, sql, {**(params or {}), "tenant_id": self.tenant_id})

    def count(self, table: str, where: str = "", params: Mapping[str, Any] | None = None) -> int:
        """How many of this tenant's rows in *table* match."""
        self._check(table)
        sql = f'SELECT count(*) FROM "{table}" WHERE tenant_id = :tenant_id'
        if where:
            sql += f" AND ({where})"
        row = self.db.execute(sql, {**(params or {}), "tenant_id": self.tenant_id}).fetchone()
        return int(row[0])
