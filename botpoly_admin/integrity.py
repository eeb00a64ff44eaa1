"""The database as a whole: ``db check``, consistent backups and restores.

``run_checks`` verifies every invariant of docs/architecture.md that the stored data can show,
plus SQLite's own integrity and foreign-key checks, and returns one ``Check`` per
rule with the offending rows (a few of them, and how many in all). Invariant 4 (no
query without a tenant id) is a property of the code, tested, not of the data.

``backup`` copies the live database through SQLite's backup API: one step, so the
copy is one consistent snapshot even while ``run`` keeps writing (in WAL mode a
reader blocks no writer). ``restore`` copies a verified backup back the same way,
so connections that other processes hold on the database stay valid, and refuses
while any runner holds a lease on it.

Neither ever copies the secret key: a backup holds ciphertexts only, and the key
file (or ``BOTPOLY_SECRET_KEYS``) must be kept separately, which is the point of
encrypting the credentials at all.
"""

from __future__ import annotations

import os
import sqlite3
import struct
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from operator import itemgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from botpoly_admin import clock, policy, reconciliation
from botpoly_admin.bots import ORCHESTRATOR_FRESH_S, live_orchestrators
from botpoly_admin.clock import period_bounds
from botpoly_admin.errors import Conflict, CredentialsError, InvalidInput, StoreError
from botpoly_admin.ledger import cash_micros
from botpoly_admin.models import effective_quota, from_micros
from botpoly_admin.secrets import ENV_KEYS, KeyRing, key_file_for, load_keyring
from botpoly_admin.store import MIGRATIONS, is_ours, migrate, select, transaction

if TYPE_CHECKING:
    import sqlite_utils

    from botpoly_admin.tenants import TenantManager

ROWS_SHOWN = 20  # offending rows kept per check; the total is counted in full
# Shorter plaintexts are not searched for in the file: eight characters or fewer
# match somewhere in any database of some size, and such a secret protects nothing.
MIN_SEARCHED_LEN = 8
_GRAM = 8  # see _scan_files
_READ_BYTES = 8 << 20
SQLITE_MAGIC = b"SQLite format 3\x00"
# Tables with a tenant_id that may outlive their tenant: the audit log keeps the
# record of a purged tenant (``tenant.purge`` is written with its id).
NOT_TENANT_OWNED = frozenset({"tenants", "audit_log"})
_CODECS = {"UTF-8": "utf-8", "UTF-16le": "utf-16-le", "UTF-16be": "utf-16-be"}


# --- db check ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """The outcome of one rule: offending rows (at most ROWS_SHOWN) and their total."""

    name: str
    description: str
    ok: bool
    rows: list[dict[str, Any]] = field(default_factory=list)
    total: int = 0
    note: str | None = None

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
# and an optional note.
Rule = Callable[[_Context], tuple[Iterable[dict[str, Any]], str | None]]


def run_checks(manager: TenantManager) -> list[Check]:
    """Verify every invariant the data can show; one Check per rule, in a fixed order.

    The SQL checks read one snapshot (a read transaction: in WAL mode it blocks no
    writer, so ``run`` may keep trading meanwhile). A check that cannot even run on a
    damaged file fails with the SQLite error as its row instead of stopping the rest.
    """
    db = manager.db
    ctx = _Context(db, manager.db_path, clock.iso(clock.now()), clock.iso(clock.wall_now()))
    results = []
    db.conn.execute("BEGIN")
    try:
        for name, description, rule in CHECKS:
            try:
                offending, note = rule(ctx)
                results.append(_outcome(name, description, offending, note))
            except sqlite3.DatabaseError as exc:
                results.append(Check(name, description, False, [{"error": str(exc)}], 1))
    finally:
        db.conn.execute("ROLLBACK")
    return results


def check_invariants(manager: TenantManager) -> list[str]:
    """Every problem ``run_checks`` finds, one line each; empty when the database is sound."""
    return [line for check in run_checks(manager) if not check.ok for line in check.problems()]


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
    rows = ctx.db.conn.execute("PRAGMA integrity_check").fetchall()
    return [{"message": r[0]} for r in rows if r[0] != "ok"], None


def _foreign_keys(ctx: _Context) -> tuple[Iterable[dict[str, Any]], str | None]:
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
          FROM usage u)
        WHERE trades_used != counted + adjustment
        UNION ALL
        SELECT t.tenant_id, t.period, NULL, NULL, count(*) FROM trades t
        WHERE t.counted = 1 AND NOT EXISTS (SELECT 1 FROM usage u
          WHERE u.tenant_id = t.tenant_id AND u.period = t.period)
        GROUP BY t.tenant_id, t.period
        ORDER BY 1, 2"""), None


# A change of quota or tier, as tenants.update_tenant and ledger.set_quota audit it.
QUOTA_CHANGE_SQL = """
SELECT max(ts) FROM audit_log WHERE tenant_id = :tenant_id AND ts >= :start
AND (action = 'quota.set' OR (action = 'tenant.update' AND EXISTS (
    SELECT 1 FROM json_each(details, '$.fields')
    WHERE value IN ('tier', 'monthly_trades_quota'))))
"""


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
        changed = ctx.db.conn.execute(QUOTA_CHANGE_SQL, {
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
    for r in select(ctx.db, "SELECT tenant_id, capital_micros FROM tenants "
                            "ORDER BY created_at, rowid"):
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
                          "FROM trades NOT INDEXED GROUP BY tenant_id, client_order_id "
                          "HAVING count(*) > 1 ORDER BY 1, 2"), None


def _live_drift(ctx: _Context) -> tuple[Iterable[dict[str, Any]], str | None]:
    """The last reconciliation of each live tenant with its exchange account (stored by
    the live broker; ``db check`` sends no request): any drift fails."""
    drifting = reconciliation.drifting(ctx.db)
    return ({"tenant_id": r["tenant_id"], "checked_at": r["checked_at"],
             "drift": r["drift"]} for r in drifting), None


def tenant_owned_tables(db: sqlite_utils.Database) -> list[str]:
    """Every table of the schema whose rows belong to a tenant (has a tenant_id)."""
    rows = db.conn.execute(
        "SELECT m.name FROM sqlite_master m, pragma_table_info(m.name) c "
        "WHERE m.type = 'table' AND c.name = 'tenant_id' ORDER BY m.name").fetchall()
    return [r[0] for r in rows if r[0] not in NOT_TENANT_OWNED]


def _orphans(ctx: _Context) -> tuple[Iterable[dict[str, Any]], str | None]:
    def rows() -> Iterator[dict[str, Any]]:
        for table in tenant_owned_tables(ctx.db):
            yield from select(ctx.db, f"SELECT '{table}' AS \"table\", x.tenant_id, "
                                      f"count(*) AS \"rows\" FROM [{table}] x "
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
    problems = select(ctx.db, """
        SELECT tenant_id, owner, lease_expires_at, state, CASE
          WHEN owner IS NOT NULL AND lease_expires_at IS NULL THEN 'owner without an expiry'
          WHEN owner IS NULL AND lease_expires_at IS NOT NULL THEN 'expiry without an owner'
          WHEN owner IS NULL AND state NOT IN ('stopped', 'refused')
            THEN 'held state without an owner'
        END AS problem FROM bots NOT INDEXED WHERE problem IS NOT NULL
        UNION ALL
        SELECT tenant_id, group_concat(owner, ' + '), max(lease_expires_at), NULL,
          count(*) || ' rows for one bot' FROM bots NOT INDEXED
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


def _plaintexts(ctx: _Context) -> tuple[Iterable[dict[str, Any]], str | None]:
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
                 for path, needle in _scan_files(files, list(needles))
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
    return sorted(offending, key=itemgetter("tenant_id", "name")), "; ".join(notes) or None


def _scan_files(paths: Sequence[Path], needles: Sequence[bytes]
                ) -> Iterator[tuple[Path, bytes]]:
    """Yield (file, needle) for each needle found in each file, reading in chunks.

    One ``find`` per needle over a large file costs too much with thousands of
    credentials, so the long needles are matched by their 8-byte pieces first: any
    occurrence of a needle of 15 bytes or more covers a whole 8-byte block aligned
    to a multiple of 8 in the chunk, so comparing the aligned blocks of the chunk (in
    C, through ``struct.iter_unpack``) with a set of every needle's pieces finds the
    few candidates, which are then confirmed with ``in``. Shorter needles are searched
    for directly. Chunks overlap by the longest needle, so none falls between two.
    """
    if not needles:
        return
    pieces: dict[bytes, set[bytes]] = {}
    direct = []
    for needle in needles:
        if len(needle) >= 2 * _GRAM - 1:
            for i in range(len(needle) - _GRAM + 1):
                pieces.setdefault(needle[i:i + _GRAM], set()).add(needle)
        else:
            direct.append(needle)
    overlap = max(len(n) for n in needles) - 1
    unpack = struct.Struct(f"{_GRAM}s").iter_unpack
    for path in paths:
        found: set[bytes] = set()
        for chunk in _read_chunks(path, overlap):
            view = memoryview(chunk)[:len(chunk) - len(chunk) % _GRAM]
            hits = pieces.keys() & map(itemgetter(0), unpack(view))
            candidates = {n for piece in hits for n in pieces[piece]}
            for needle in candidates.union(direct) - found:
                if needle in chunk:
                    found.add(needle)
                    yield path, needle


def _read_chunks(path: Path, overlap: int) -> Iterator[bytes]:
    """The file in chunks, each starting with the last *overlap* bytes of the one before.

    Plain reads, not mmap: the WAL may shrink under us, which a mapping turns into
    a SIGBUS."""
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        return  # a -wal removed by its last connection closing
    with handle:
        tail = b""
        while block := handle.read(_READ_BYTES):
            chunk = tail + block
            yield chunk
            tail = chunk[-overlap:] if overlap else b""


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
    ("no_plaintext_secrets", "no credential's plaintext in the database file or its WAL",
     _plaintexts),
]


# --- reading a database file ---------------------------------------------------------------


def _read_only(path: Path) -> sqlite3.Connection:
    """A read-only connection: inspecting a file must not change it."""
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True,
                           timeout=5.0, isolation_level=None)


def inspect_database(path: Path, *, name: Path | None = None) -> dict[str, Any]:
    """Verify that *path* is a whole botpoly-admin database this version knows.

    Returns its size, schema version and tenant count. Raises InvalidInput with a
    one-line reason otherwise: missing, a directory, empty, not SQLite, not ours, a
    schema version we do not know, or failing SQLite's integrity check. Messages
    name *name* if given (the database a temporary copy was taken of), else *path*.
    """
    path = Path(path)
    shown = name or path
    try:
        if path.is_dir():
            raise InvalidInput(f"{path} is a directory, not a database file")
        with path.open("rb") as handle:
            magic = handle.read(len(SQLITE_MAGIC))
    except FileNotFoundError:
        raise InvalidInput(f"no such file: {path}") from None
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror}") from None
    if not magic:
        raise InvalidInput(f"{path} is empty, not a botpoly-admin database")
    if magic != SQLITE_MAGIC:
        raise InvalidInput(f"{path} is not a SQLite database")
    try:
        conn = _read_only(path)
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            tables = {row[0] for row in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
            if not is_ours(app_id, version, tables):
                raise InvalidInput(f"{shown} is a SQLite database but not a botpoly-admin one")
            if version > len(MIGRATIONS):
                raise InvalidInput(f"{shown} has schema version {version}, newer than this "
                                   f"botpoly-admin knows ({len(MIGRATIONS)}); upgrade it first")
            problems = [r[0] for r in conn.execute("PRAGMA integrity_check(5)") if r[0] != "ok"]
            if problems:
                raise InvalidInput(f"{shown} fails SQLite's integrity check: "
                                   + " ".join(problems[0].split()))
            tenants = conn.execute("SELECT count(*) FROM tenants").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise InvalidInput(f"{shown} is not a usable SQLite database ({exc})") from None
    return {"path": str(path), "bytes": path.stat().st_size, "schema_version": version,
            "tenants": tenants}


def key_location(db_path: Path) -> dict[str, str]:
    """Where the keys of *db_path* are: the environment variable or the key file
    (the file need not exist yet). Neither is ever part of a backup."""
    if os.environ.get(ENV_KEYS, "").strip():
        return {"source": "env", "where": ENV_KEYS}
    return {"source": "file", "where": str(key_file_for(db_path))}


# --- backup --------------------------------------------------------------------------------


def backup(manager: TenantManager, target: Path, *, force: bool = False) -> dict[str, Any]:
    """Copy the database to *target* (mode 0600), consistently, while it is in use.

    The copy is written beside the target under a temporary name, verified
    (integrity, schema, tenants), and only then moved into place, so a failure
    leaves nothing behind and never a half-written backup under the target's name.
    Refuses an existing target unless *force*, a directory, a missing directory, the
    database itself and its key file. The key is never copied.
    """
    target = Path(target)
    _check_target(manager.db_path, target, force)
    db = manager.db  # opens the source: a missing database is an error before any write
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except OSError as exc:
        raise StoreError(f"cannot write in {target.parent}: {exc.strerror}") from None
    os.close(fd)
    try:
        copy = sqlite3.connect(tmp, isolation_level=None)
        try:
            # One step (pages=-1): the whole copy reads one snapshot of the source.
            db.conn.backup(copy)
            # A standalone file: no -wal beside it to lose when it is moved or copied.
            copy.execute("PRAGMA journal_mode = DELETE")
        finally:
            copy.close()
        try:
            # The copy is page for page the database: its faults are the database's.
            info = inspect_database(tmp, name=manager.db_path)
        except InvalidInput as exc:
            raise StoreError(f"{exc}; nothing written (its copy failed verification)"
                             ) from None
        with tmp.open("rb") as handle:
            os.fsync(handle.fileno())
        _move_into_place(tmp, target, force)
    except sqlite3.Error as exc:
        raise StoreError(f"backup of {manager.db_path} failed, nothing written: {exc}"
                         ) from None
    finally:
        for leftover in (tmp, Path(f"{tmp}-journal")):
            leftover.unlink(missing_ok=True)
    return {**info, "path": str(target), "source": str(manager.db_path), "integrity": "ok",
            "key_not_included": key_location(manager.db_path)}


def _check_target(db_path: Path, target: Path, force: bool) -> None:
    try:
        _check_target_path(db_path, target, force)
    except OSError as exc:  # a name too long, a component that is a file, ...
        raise InvalidInput(f"cannot use {target} as the backup path: {exc.strerror}") from None


def _check_target_path(db_path: Path, target: Path, force: bool) -> None:
    if target.is_dir():
        raise InvalidInput(f"{target} is a directory: give the backup file's path")
    parent = target.parent
    if not parent.is_dir():
        raise InvalidInput(f"directory does not exist: {parent}")
    for ours, what in ((db_path, "the database itself"),
                       (key_file_for(db_path), "the secret key file")):
        if target.resolve() == ours.resolve():
            raise InvalidInput(f"{target} is {what}: choose another backup path")
    if target.exists() and not force:
        raise Conflict(f"{target} already exists (use --force to overwrite it)")


def _move_into_place(tmp: Path, target: Path, force: bool) -> None:
    """Give the verified copy its name: atomically, and without --force never over a
    file that appeared meanwhile (a hard link fails if the name exists)."""
    if not force:
        try:
            os.link(tmp, target)
        except FileExistsError:
            raise Conflict(f"{target} already exists (use --force to overwrite it)") from None
        except OSError:
            pass  # no hard links on this filesystem: fall back on the rename
        else:
            return
        if target.exists():
            raise Conflict(f"{target} already exists (use --force to overwrite it)")
    os.replace(tmp, target)
    try:
        dir_fd = os.open(target.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)  # the new name survives a crash
    finally:
        os.close(dir_fd)


# --- restore -------------------------------------------------------------------------------


def lease_holders(db: sqlite_utils.Database) -> list[dict[str, Any]]:
    """Runners using the database now: owners of live leases (real clock) and
    orchestrators with a fresh heartbeat, one row each."""
    holders = select(db, "SELECT owner, count(*) AS bots, max(lease_expires_at) AS until "
                         "FROM bots WHERE owner IS NOT NULL AND lease_expires_at >= ? "
                         "GROUP BY owner ORDER BY owner", (clock.iso(clock.wall_now()),))
    known = {h["owner"] for h in holders}
    for orchestrator in live_orchestrators(db, ORCHESTRATOR_FRESH_S):
        if orchestrator["owner"] not in known:
            holders.append({"owner": orchestrator["owner"], "bots": 0,
                            "until": orchestrator["heartbeat_at"]})
    return holders


def _refuse_if_in_use(db: sqlite_utils.Database, db_path: Path) -> None:
    holders = lease_holders(db)
    if not holders:
        return
    first = holders[0]
    what = (f"holds the lease of {first['bots']} bot(s) until {first['until']}" if first["bots"]
            else f"is running (heartbeat at {first['until']})")
    others = f" (and {len(holders) - 1} other runner(s))" if len(holders) > 1 else ""
    raise Conflict(f"cannot restore over {db_path}: runner {first['owner']} {what}{others}; "
                   "stop `botpoly-admin run` (or start-bot --foreground) first")


def credential_status(db: sqlite_utils.Database, db_path: Path) -> dict[str, Any]:
    """How many stored credentials there are and how many do not decrypt with the
    current keys (with the first reason), counted without reporting any value."""
    ctx = _Context(db, db_path, "", "")
    offending, _ = _credentials(ctx)
    rows = list(offending)
    total = db.conn.execute("SELECT count(*) FROM credentials").fetchone()[0]
    return {"total": total, "undecryptable": len(rows),
            "problem": rows[0]["problem"] if rows else None}


def restore(manager: TenantManager, source: Path,
            confirm: Callable[[dict[str, Any]], bool] | None = None) -> dict[str, Any]:
    """Replace the database with the backup at *source*, through SQLite's backup API.

    *source* is verified first (``inspect_database``). Refused (Conflict) while any
    runner holds a lease on the database or an orchestrator's heartbeat is fresh,
    checked before and again after *confirm*, which is shown the plan and may say no
    (then nothing is written and ``restored`` is False). A missing database is
    created. Afterwards the schema is migrated if the backup is older, the restore is
    audited in the restored database, and ``credentials`` says how many stored
    secrets do not decrypt with the current keys.

    A runner that starts between the last check and the copy is not stopped; it finds
    its leases gone on its next tick, as after any takeover.
    """
    source = Path(source)
    info = inspect_database(source)
    target = manager.db_path
    if target.exists() and source.samefile(target):
        raise InvalidInput(f"{source} is the database itself")
    db = manager.db
    _refuse_if_in_use(db, target)
    plan = {"source": str(source), "target": str(target), "schema_version":
            info["schema_version"], "tenants": info["tenants"],
            "target_tenants": db.conn.execute("SELECT count(*) FROM tenants").fetchone()[0]}
    if confirm is not None and not confirm(plan):
        return {**plan, "restored": False}
    _refuse_if_in_use(db, target)
    try:
        backup_conn = _read_only(source)
        try:
            backup_conn.backup(db.conn)
        finally:
            backup_conn.close()
    except sqlite3.Error as exc:
        raise StoreError(f"restore from {source} failed: {exc}") from None
    migrate(db)
    with transaction(db) as conn:
        manager.audit(conn, "db.restore", None, {
            "source": str(source.resolve()), "tenants": info["tenants"],
            "schema_version": info["schema_version"]})
    return {**plan, "restored": True, "credentials": credential_status(db, target)}
