"""``db check``: every invariant of docs/architecture.md the stored data can show.

``run_checks`` verifies those invariants, plus SQLite's own integrity and foreign-key
checks, and returns one ``Check`` per rule of ``CHECKS`` with the offending rows (a few
of them, and how many in all). Invariant 4 (no query without a tenant id) is a
property of the code, tested, not of the data.

A rule is a function of the shared ``_Context`` that returns its offending rows and an
optional note; adding a check is one function and one line of ``CHECKS``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from botpoly_admin import audit, clock, policy
from botpoly_admin.clock import period_bounds
from botpoly_admin.errors import CredentialsError
from botpoly_admin.ledger import cash_micros, reconciliation
from botpoly_admin.maintenance.scan import scan_files
from botpoly_admin.models import effective_quota, from_micros
from botpoly_admin.secrets import ENV_KEYS, KeyRing, key_file_for, load_keyring
from botpoly_admin.store import dialect_of, select, string_agg, tenant_order
from botpoly_admin.store.sql import database_now
from botpoly_admin.store.sqlite import SQLITE_MAGIC

if TYPE_CHECKING:
    import sqlite_utils

    from botpoly_admin.store import SQLiteStore

ROWS_SHOWN = 20  # offending rows kept per check; the total is counted in full
# Shorter plaintexts are not searched for in the file: eight characters or fewer
# match somewhere in any database of some size, and such a secret protects nothing.
MIN_SEARCHED_LEN = 8
# Tables with a tenant_id that may outlive their tenant: the audit log keeps the
# record of a purged tenant (``tenant.purge`` is written with its id).
NOT_TENANT_OWNED = frozenset({"tenants", "audit_log"})
_CODECS = {"UTF-8": "utf-8", "UTF-16le": "utf-16-le", "UTF-16be": "utf-16-be"}



@dataclass(frozen=True)
class Check:
    """The outcome of one rule: offending rows (at most ROWS_SHOWN) and their total."""

    name: str
    description: str
    ok: bool
    rows: list[dict[str, Any]] = field(default_factory=list)
    total: int = 0
    note: str | None = None
    skipped: str | None = None  # why the rule did not run here (ok says nothing then)

    def as_dict(self) -> dict[str, Any]:
        """Plain data for rendering (JSON or a table)."""
        return asdict(self)

    def problems(self) -> list[str]:
        """One line per offending row shown (and one for the rows left out)."""
        lines = [f"{self.name}: " + ", ".join(f"{k}={v}" for k, v in row.items())
                 for row in self.rows]
        if self.total > len(self.rows):
            lines.append(f"{self.name}: ... and {self.total - len(self.rows)} more")
        return lines


@dataclass
class _Context:
    """What the checks share: the connection, the clocks, and the decrypted credentials
    (worked out once, for the decryption check and the plaintext search)."""

    db: sqlite_utils.Database
    db_path: Path
    now: str  # business time: trial ends, like every rule about tenants
    wall: str  # the real clock: leases
    plaintexts: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    undecryptable: int = 0


# A rule returns its offending rows (any iterable: only the first ROWS_SHOWN are kept)
# and an optional note, or raises Skip where it cannot run.
Rule = Callable[[_Context], tuple[Iterable[dict[str, Any]], str | None]]


class Skip(Exception):  # noqa: N818 - not an error: a rule that does not apply here
    """A rule that does not run on this database, and why (its message)."""


def run_checks(store: SQLiteStore) -> list[Check]:
    """Verify every invariant the data can show; one Check per rule, in a fixed order.

    The SQL checks read one snapshot (a read transaction: in WAL mode it blocks no
    writer, so ``run`` may keep trading meanwhile). A check that cannot even run on a
    damaged file fails with the SQLite error as its row instead of stopping the rest.
    """
    db = store.db
    ctx = _Context(db, store.db_path, clock.iso(clock.now()), database_now(db))
    postgres = _on_postgres(ctx)
    results = []
    # On PostgreSQL one snapshot is REPEATABLE READ, and a failed statement spoils
    # the transaction: each rule runs in its own savepoint.
    db.conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY" if postgres else "BEGIN")
    try:
        for name, description, rule in CHECKS:
            try:
                if postgres:
                    db.conn.execute("SAVEPOINT rule")
                offending, note = rule(ctx)
                results.append(_outcome(name, description, offending, note))
            except Skip as skip:
                results.append(Check(name, description, True, skipped=str(skip)))
            except sqlite3.DatabaseError as exc:
                if postgres:
                    db.conn.execute("ROLLBACK TO SAVEPOINT rule")
                results.append(Check(name, description, False, [{"error": str(exc)}], 1))
    finally:
        db.conn.execute("ROLLBACK")
    return results


def _on_postgres(ctx: _Context) -> bool:
    return dialect_of(ctx.db) == "postgresql"


def _not_indexed(ctx: _Context) -> str:
    """SQLite's NOT INDEXED (read the table, not a possibly damaged index); PostgreSQL
    has no such clause (its planner picks, and amcheck verifies its indexes)."""
    return "" if _on_postgres(ctx) else " NOT INDEXED"


def check_invariants(store: SQLiteStore) -> list[str]:
    """Every problem ``run_checks`` finds, one line each; empty when the database is sound."""
    return [line for check in run_checks(store) if not check.ok for line in check.problems()]


def _outcome(name: str, description: str, offending: Iterable[dict[str, Any]],
             note: str | None) -> Check:
    shown: list[dict[str, Any]] = []
    total = 0
    for row in offending:
        total += 1
        if len(shown) < ROWS_SHOWN:
            shown.append(row)
    return Check(name, description, total == 0, shown, total, note)


def _sqlite_integrity(ctx: _Context) -> tuple[Iterable[dict[str, Any]], str | None]:
    if _on_postgres(ctx):
        raise Skip("on PostgreSQL the server checksums its own pages; pg_amcheck is the "
                   "tool that verifies them")
    rows = ctx.db.conn.execute("PRAGMA integrity_check").fetchall()
    return [{"message": r[0]} for r in rows if r[0] != "ok"], None


def _foreign_keys(ctx: _Context) -> tuple[Iterable[dict[str, Any]], str | None]:
    if _on_postgres(ctx):
        raise Skip("on PostgreSQL the server enforces every foreign key on write")
    rows = ctx.db.conn.execute("PRAGMA foreign_key_check").fetchall()
    return [{"table": t, "rowid": rowid, "parent": parent, "fkid": fkid}
            for t, rowid, parent, fkid in rows], None


def _usage(ctx: _Context) -> tuple[Iterable[dict[str, Any]], str | None]:
    # Counted trades of a period with no usage row at all break the rule too.
    return select(ctx.db, """
        SELECT * FROM (
          SELECT u.tenant_id, u.period, u.trades_used, u.trades_adjustment AS adjustment,
            (SELECT count(*) FROM trades t WHERE t.tenant_id = u.tenant_id
             AND t.period = u.period AND t.counted = 1) AS counted
          FROM usage u) AS periods
        WHERE trades_used != counted + adjustment
        UNION ALL
        SELECT t.tenant_id, t.period, NULL, NULL, count(*) FROM trades t
        WHERE t.counted = 1 AND NOT EXISTS (SELECT 1 FROM usage u
          WHERE u.tenant_id = t.tenant_id AND u.period = t.period)
        GROUP BY t.tenant_id, t.period
        ORDER BY 1, 2"""), None


def _quota(ctx: _Context) -> tuple[Iterable[dict[str, Any]], str | None]:
    """Periods over the tenant's quota. Only today's quota is stored, so a period over
    it is corruption only if that quota already held then: an operator who lowered the
    quota or the tier at or after the period's start explains it (an ok, with a note)."""

    offending, explained = [], []
    for r in select(ctx.db, "SELECT u.tenant_id, u.period, u.trades_used, t.tier, "
                            "t.monthly_trades_quota, t.quota_unlimited FROM usage u "
                            "JOIN tenants t USING (tenant_id) WHERE u.trades_used > 0 "
                            "ORDER BY u.tenant_id, u.period"):
        quota = effective_quota(r)
        if quota is None or r["trades_used"] <= quota:
            continue
        changed = ctx.db.conn.execute(audit.quota_change_sql(ctx.db), {
            "tenant_id": r["tenant_id"], "start": period_bounds(r["period"])[0]}).fetchone()[0]
        row = {"tenant_id": r["tenant_id"], "period": r["period"],
               "trades_used": r["trades_used"], "quota": quota}
        (explained if changed else offending).append({**row, "quota_changed_at": changed})
    note = None
    if explained:
        listed = "; ".join(f"{e['tenant_id']} {e['period']}: {e['trades_used']} used, quota "
                           f"{e['quota']} since {e['quota_changed_at']}" for e in explained[:3])
        more = f"; and {len(explained) - 3} more" if len(explained) > 3 else ""
        note = (f"{len(explained)} period(s) over a quota or tier changed at or after their "
                f"start (an operator's change, not corruption): {listed}{more}")
    return ({k: v for k, v in o.items() if k != "quota_changed_at"} for o in offending), note


def _positions(ctx: _Context) -> tuple[Iterable[dict[str, Any]], str | None]:
    # Each strategy's position equals the sum of that strategy's fills (a trade without
    # a strategy belongs to ''). SELL and SETTLE take shares out; only trades that
    # filled moved a position. A token with an unattributed ('') position from before
    # positions had owners is checked as a whole: its fills were never split.
    fills = ("COALESCE(sum(CASE t.side WHEN 'BUY' THEN t.shares_micros "
             "ELSE -t.shares_micros END), 0)")
    moved = "t.status IN ('filled', 'partial', 'settled')"
    whole = ("EXISTS (SELECT 1 FROM positions u WHERE u.tenant_id = {a}.tenant_id "
             "AND u.token_id = {a}.token_id AND u.strategy = '')")
    rows = select(ctx.db, f"""
        SELECT * FROM (
          SELECT p.tenant_id, p.token_id, p.strategy, p.shares_micros AS shares,
            (SELECT {fills} FROM trades t WHERE t.tenant_id = p.tenant_id
             AND t.token_id = p.token_id AND COALESCE(t.strategy, '') = p.strategy
             AND {moved}) AS fills
          FROM positions p WHERE NOT {whole.format(a="p")}
          UNION ALL
          SELECT p.tenant_id, p.token_id, '', sum(p.shares_micros),
            (SELECT {fills} FROM trades t WHERE t.tenant_id = p.tenant_id
             AND t.token_id = p.token_id AND {moved})
          FROM positions p WHERE {whole.format(a="p")} GROUP BY p.tenant_id, p.token_id)
          AS held
        WHERE shares != fills
        UNION ALL
        SELECT t.tenant_id, t.token_id, COALESCE(t.strategy, ''), NULL, {fills} FROM trades t
        WHERE t.token_id IS NOT NULL AND {moved}
        AND NOT EXISTS (SELECT 1 FROM positions p WHERE p.tenant_id = t.tenant_id
          AND p.token_id = t.token_id
          AND (p.strategy = COALESCE(t.strategy, '') OR p.strategy = ''))
        GROUP BY t.tenant_id, t.token_id, COALESCE(t.strategy, '') HAVING {fills} != 0
        ORDER BY 1, 2, 3""")
    # In micro-units: a difference of one would vanish in a rounded table cell. The
    # strategy is named when there is one ('' is the whole token, or no strategy).
    return ({"tenant_id": r["tenant_id"], "token_id": r["token_id"],
             **({"strategy": r["strategy"]} if r["strategy"] else {}),
             "shares_micros": r["shares"], "fills_micros": r["fills"]} for r in rows), None


def _cash(ctx: _Context) -> tuple[Iterable[dict[str, Any]], str | None]:
    offending = []
    for r in select(ctx.db, "SELECT t.tenant_id, t.capital_micros FROM tenants t "
                            f"ORDER BY t.created_at, {tenant_order(ctx.db)}"):
        cash = cash_micros(ctx.db.conn, r["tenant_id"], r["capital_micros"])
        if cash < 0:
            offending.append({"tenant_id": r["tenant_id"],
                              "capital": from_micros(r["capital_micros"]),
                              "cash": from_micros(cash)})
    return offending, None


def _client_order_ids(ctx: _Context) -> tuple[Iterable[dict[str, Any]], str | None]:
    # NOT INDEXED: the UNIQUE index would answer from itself, and a damaged index is
    # exactly how a duplicate could get in.
    return select(ctx.db, "SELECT tenant_id, client_order_id, count(*) AS trades "
                          f"FROM trades{_not_indexed(ctx)} GROUP BY tenant_id, client_order_id "
                          "HAVING count(*) > 1 ORDER BY 1, 2"), None


def _live_drift(ctx: _Context) -> tuple[Iterable[dict[str, Any]], str | None]:
    """The last reconciliation of each live tenant with its exchange account (stored by
    the live broker; ``db check`` sends no request): any drift fails."""
    drifting = reconciliation.drifting(ctx.db)
    return ({"tenant_id": r["tenant_id"], "checked_at": r["checked_at"],
             "drift": r["drift"]} for r in drifting), None


def tenant_owned_tables(db: sqlite_utils.Database) -> list[str]:
    """Every table of the schema whose rows belong to a tenant (has a tenant_id)."""
    if dialect_of(db) == "postgresql":
        sql = ("SELECT table_name FROM information_schema.columns WHERE column_name = "
               "'tenant_id' AND table_schema = current_schema() ORDER BY table_name")
    else:
        sql = ("SELECT m.name FROM sqlite_master m, pragma_table_info(m.name) c "
               "WHERE m.type = 'table' AND c.name = 'tenant_id' ORDER BY m.name")
    rows = db.conn.execute(sql).fetchall()
    return [r[0] for r in rows if r[0] not in NOT_TENANT_OWNED]


def _orphans(ctx: _Context) -> tuple[Iterable[dict[str, Any]], str | None]:
    def rows() -> Iterator[dict[str, Any]]:
        for table in tenant_owned_tables(ctx.db):
            yield from select(ctx.db, f"SELECT '{table}' AS \"table\", x.tenant_id, "
                                      f"count(*) AS \"rows\" FROM \"{table}\" x "
                                      # NULL: a row of no tenant (an admin API key)
                                      "WHERE x.tenant_id IS NOT NULL AND NOT EXISTS "
                                      "(SELECT 1 FROM tenants t WHERE t.tenant_id = x.tenant_id) "
                                      "GROUP BY x.tenant_id ORDER BY x.tenant_id")

    return rows(), None


def _leases(ctx: _Context) -> tuple[Iterable[dict[str, Any]], str | None]:
    """What the schema lets us check about leases (docs/architecture.md invariant 5).

    A bot has one row (tenant_id is the key) with one ``owner`` column, so two owners
    of one bot can only come from a damaged key index: rows are grouped without it.
    A lease is whole: owner and expiry are set and cleared together, and a bot in a
    state other than ``stopped`` or ``refused`` has an owner, since only the holder
    writes a state and releasing the lease writes ``stopped`` (``refused`` for a
    refused bot still wanted: see ``bots.RELEASED_STATE``).

    Not checkable, so not failures: whether a live lease's owner is a registered
    orchestrator (``start-bot --foreground`` holds leases without registering), or
    whether a registered orchestrator's heartbeat is fresh (``--lease-ttl`` may
    outlast the heartbeat window; a stalled runner's lease simply expires).
    """
    problems = select(ctx.db, f"""
        SELECT * FROM (SELECT tenant_id, owner, lease_expires_at, state, CASE
          WHEN owner IS NOT NULL AND lease_expires_at IS NULL THEN 'owner without an expiry'
          WHEN owner IS NULL AND lease_expires_at IS NOT NULL THEN 'expiry without an owner'
          WHEN owner IS NULL AND state NOT IN ('stopped', 'refused')
            THEN 'held state without an owner'
        END AS problem FROM bots{_not_indexed(ctx)}) AS leases WHERE problem IS NOT NULL
        UNION ALL
        SELECT tenant_id, {string_agg(ctx.db, "owner", " + ")}, max(lease_expires_at), NULL,
          count(*) || ' rows for one bot' FROM bots{_not_indexed(ctx)}
        GROUP BY tenant_id HAVING count(*) > 1
        ORDER BY 1""")
    unregistered = ctx.db.conn.execute(
        "SELECT count(*) FROM bots WHERE owner IS NOT NULL AND lease_expires_at >= ? "
        "AND owner NOT IN (SELECT owner FROM orchestrators)", (ctx.wall,)).fetchone()[0]
    note = (f"{unregistered} live lease(s) held by runners that are not registered "
            "orchestrators (start-bot --foreground runs are not)") if unregistered else None
    return problems, note


def _eligible(ctx: _Context) -> tuple[Iterable[dict[str, Any]], str | None]:
    # The lease is real time (wall clock); whether the tenant may trade is business time.
    return select(ctx.db, """
        SELECT b.tenant_id, b.owner, b.state, t.status, t.trial_ends_at
        FROM bots b JOIN tenants t USING (tenant_id)
        WHERE b.owner IS NOT NULL AND b.lease_expires_at >= :wall AND b.state != 'stopped'
        AND NOT """ + policy.MAY_TRADE_SQL + """
        ORDER BY b.tenant_id""", {"wall": ctx.wall, "now": ctx.now}), None


def _credentials(ctx: _Context) -> tuple[Iterable[dict[str, Any]], str | None]:
    """Decrypt every credential with the keys the TenantManager would use; remember the
    plaintexts (in memory only) for the search of the file. Never reports a value.

    Reads the keys with ``load_keyring`` rather than ``TenantManager.keyring``: the
    latter writes a key check token into a database without one, and a check must
    not write."""
    creds = select(ctx.db, "SELECT tenant_id, name, key_id, ciphertext FROM credentials "
                           "ORDER BY tenant_id, name")
    if not creds:
        return [], None
    try:
        ring: KeyRing | None = load_keyring(ctx.db_path, create=False)
        if ring is not None:
            ring.fernet()  # a malformed key fails here, once
    except CredentialsError as exc:
        ring, reason = None, str(exc)
    else:
        reason = (f"no secret key configured (set {ENV_KEYS} or restore the key file "
                  f"{key_file_for(ctx.db_path)})")
    offending = []
    for c in creds:
        if ring is None:
            problem = reason
        else:
            try:
                plaintext = ring.decrypt(c["ciphertext"])
            except CredentialsError:
                problem = (f"encrypted under key {c['key_id']}, which is not configured"
                           if c["key_id"] not in ring.key_ids else
                           "does not decrypt although its key is configured (damaged)")
            else:
                ctx.plaintexts.setdefault(plaintext, []).append((c["tenant_id"], c["name"]))
                continue
        offending.append({"tenant_id": c["tenant_id"], "name": c["name"],
                          "key_id": c["key_id"], "problem": problem})
    ctx.undecryptable = len(offending)
    return offending, None


def _installation_secrets(ctx: _Context) -> tuple[Iterable[dict[str, Any]], str | None]:
    """Decrypt the installation's own secrets (the REST API's token secret) with the
    keys in use, as ``_credentials`` does the tenants'; remember them for the search
    of the file. Never reports a value."""
    stored = select(ctx.db, "SELECT name, key_id, ciphertext FROM installation_secrets "
                            "ORDER BY name")
    if not stored:
        return [], None
    try:
        ring = load_keyring(ctx.db_path, create=False)
        problem = None if ring is not None else (
            f"no secret key configured (set {ENV_KEYS} or restore the key file "
            f"{key_file_for(ctx.db_path)})")
    except CredentialsError as exc:
        ring, problem = None, str(exc)
    offending = []
    for row in stored:
        if ring is not None:
            try:
                plaintext = ring.decrypt(row["ciphertext"])
            except CredentialsError:
                problem = (f"encrypted under key {row['key_id']}, which is not configured"
                           if row["key_id"] not in ring.key_ids + ring.retired_ids else
                           "does not decrypt although its key is configured (damaged)")
            else:
                ctx.plaintexts.setdefault(plaintext, []).append((None, row["name"]))
                continue
        offending.append({"name": row["name"], "key_id": row["key_id"], "problem": problem})
    ctx.undecryptable += len(offending)
    return offending, ("`keys drop-undecryptable` removes one that does not decrypt; `serve` "
                       "then makes a new one" if offending else None)


def credential_status(db: sqlite_utils.Database, db_path: Path) -> dict[str, Any]:
    """How many stored credentials there are and how many do not decrypt with the
    current keys (with the first reason), counted without reporting any value."""
    offending, _ = _credentials(_Context(db, db_path, "", ""))
    rows = list(offending)
    total = db.conn.execute("SELECT count(*) FROM credentials").fetchone()[0]
    return {"total": total, "undecryptable": len(rows),
            "problem": rows[0]["problem"] if rows else None}


def _plaintexts(ctx: _Context) -> tuple[Iterable[dict[str, Any]], str | None]:
    if _on_postgres(ctx):
        raise Skip("on PostgreSQL its files live on the server, out of this "
                   "command's reach; the client writes only ciphertext (vault)")
    encoding = ctx.db.conn.execute("PRAGMA encoding").fetchone()[0]
    codec = _CODECS.get(encoding, "utf-8")
    # Bytes every database of this schema holds: a secret found in them (the file
    # header, a piece of the schema's SQL) is found everywhere and proves no leak.
    structure = SQLITE_MAGIC + "\n".join(
        sql for (sql,) in ctx.db.conn.execute("SELECT sql FROM sqlite_master") if sql
    ).encode(codec)
    needles: dict[bytes, list[tuple[str, str]]] = {}
    short = structural = 0
    for plaintext, owners in ctx.plaintexts.items():
        if len(plaintext) < MIN_SEARCHED_LEN:
            short += len(owners)
            continue
        needle = plaintext.encode(codec)
        if needle in structure:
            structural += len(owners)
            continue
        needles.setdefault(needle, []).extend(owners)
    files = [p for p in (ctx.db_path, Path(f"{ctx.db_path}-wal"),
                         Path(f"{ctx.db_path}-journal")) if p.is_file()]
    offending = [{"tenant_id": tenant_id, "name": name, "found_in": path.name}
                 for path, needle in scan_files(files, list(needles))
                 for tenant_id, name in needles[needle]]
    notes = []
    if short:
        notes.append(f"{short} credential(s) shorter than {MIN_SEARCHED_LEN} characters not "
                     "searched for (they would match by chance)")
    if ctx.undecryptable:
        notes.append(f"{ctx.undecryptable} credential(s) that do not decrypt could not be "
                     "searched for")
    if structural:
        notes.append(f"{structural} credential(s) equal to part of the file header or schema "
                     "not searched for (every database holds them)")
    # An installation secret has no tenant (None): listed first.
    return (sorted(offending, key=lambda row: (row["tenant_id"] or "", row["name"])),
            "; ".join(notes) or None)


CHECKS: list[tuple[str, str, Rule]] = [
    ("sqlite_integrity", "SQLite's integrity check of every page, row and index",
     _sqlite_integrity),
    ("foreign_keys", "SQLite's foreign key check (every reference has its row)",
     _foreign_keys),
    ("usage_matches_trades", "usage.trades_used = counted trades + adjustment, per tenant "
     "and period", _usage),
    ("quota_respected", "no period has more trades than the tenant's quota", _quota),
    ("positions_match_fills", "every strategy's position equals the sum of its fills",
     _positions),
    ("cash_not_negative", "no tenant's free cash is below zero", _cash),
    ("client_order_ids_unique", "no client order id twice for one tenant", _client_order_ids),
    ("live_ledger_matches_exchange", "each live tenant's ledger agreed with its Polymarket "
     "wallet at the last reconciliation (cash, shares, open orders)", _live_drift),
    ("no_orphan_rows", "every tenant-owned row belongs to an existing tenant", _orphans),
    ("bot_leases", "a bot has at most one lease holder, and whole leases", _leases),
    ("bots_only_for_allowed_tenants", "bots hold a live lease only for tenants active or in "
     "their trial", _eligible),
    ("credentials_decrypt", "every credential decrypts with the current keys", _credentials),
    ("installation_secrets_decrypt", "the installation's secrets (the REST API's token "
     "secret) decrypt with the current keys", _installation_secrets),
    ("no_plaintext_secrets", "no credential's plaintext in the database file or its WAL",
     _plaintexts),
]

