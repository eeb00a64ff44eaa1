"""Leases: which runner runs each bot, on the database's clock, and the fence on its writes.

``botpoly_admin.bots`` re-exports what callers use; this is the runner's side of the
``bots`` table and the registry of running orchestrators.

Leases (docs/architecture.md invariant 5: a bot runs in at most one place)
    A runner (an orchestrator process, or ``start-bot --foreground``) runs a bot only
    while it holds the bot's lease: ``owner`` and ``lease_expires_at`` in its row.
    Taking a lease is one conditional UPDATE (free, already ours, or expired; desired
    running; tenant allowed to trade) whose rows come from a SELECT that locks them:
    SQLite's ``BEGIN IMMEDIATE`` holds the whole database, PostgreSQL's
    ``FOR UPDATE OF b SKIP LOCKED`` the rows, so two runners claiming at once never
    wait for each other and never both win a bot. The owner renews its leases each
    tick with its progress. A runner that dies stops renewing; once the TTL has passed
    another takes the bot over, and on the same machine at once: an owner whose
    process is gone (``owners.owner_gone``: same host and pid namespace, pid not
    alive) loses its leases.

Fencing
    Each takeover grows the bot's ``lease_epoch``. A runner checks that it still holds
    the lease at its epoch (``holds``) before every cycle, and the bot writes through
    a ``FencedStore``: every write transaction first checks, inside itself, that the
    row still names this owner and epoch with an unexpired lease (on PostgreSQL with
    the row locked ``FOR SHARE``, so a takeover waits for the write to commit, or skips
    the bot; the check rides in the message that begins the transaction, so it costs
    no round trip: ``fence_guard``), else raises ``LeaseLost`` and rolls the write
    back. A worker paused past its lease (SIGSTOP, a stalled machine, a partition)
    records nothing after another took its bots; its runner stops them without
    touching their rows.

Fair sharing (``fair_share``)
    The orchestrators that share (``run`` without ``--tenant``) and are alive split the
    bots to share evenly: with B bots and N of them, each holds floor(B/N) or
    ceil(B/N). Who holds one more is decided the same way by all of them, so they
    converge rather than trade bots back and forth: the first B mod N by
    ``started_at`` (the database's clock, whole seconds), then by owner id, so a run
    that joins later sorts last and takes bots rather than making the others pass
    the extra ones among themselves. Bots held by a runner that does not share are
    not shared out; those of a dead process are.

Clocks
    Leases, heartbeats and the orchestrator registry use the database's clock
    (``store.sql.database_clock``): the server's on PostgreSQL, so machines whose
    clocks disagree still agree on when a lease ends; a SQLite database lives on this
    machine, whose real clock is then the database's. Never ``BOTPOLY_NOW``: a frozen
    clock would make every lease either eternal or already expired. Times are stored
    as ``clock.iso`` text (UTC, whole seconds), so a lease is taken over strictly after
    its expiry second, never early.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from botpoly_admin import clock, policy
from botpoly_admin.errors import InvalidInput, LeaseLost
from botpoly_admin.owners import gone_owners
from botpoly_admin.store.base import Store
from botpoly_admin.store.sql import (
    Guard,
    database_clock,
    database_now,
    row_locks,
    transaction,
)

if TYPE_CHECKING:
    from botpoly_admin.store import Connection

DEFAULT_LEASE_TTL_S = 10.0
# An orchestrator whose heartbeat is older than this is taken for dead.
ORCHESTRATOR_FRESH_S = 10.0
# Rows of orchestrators silent for this long are removed when another one registers.
ORCHESTRATOR_FORGET_S = 24 * 3600.0
_CHUNK = 500  # ids per IN (...) list
ELIGIBLE_SQL = policy.MAY_TRADE_SQL  # whether a tenant may trade: one rule (policy.py)


def later(now: str, seconds: float) -> str:
    """The ``clock.iso`` time *seconds* after *now* (a ``clock.iso`` text)."""
    return clock.iso(clock.parse_utc(now) + timedelta(seconds=seconds))


def chunks(ids: Sequence[str]) -> Iterable[Sequence[str]]:
    """*ids* in slices short enough for one ``IN (...)`` list."""
    for start in range(0, len(ids), _CHUNK):
        yield ids[start:start + _CHUNK]


def in_list(ids: Sequence[str], prefix: str = "id") -> tuple[str, dict[str, str]]:
    """``:id0, :id1, ...`` and its parameters; an empty list matches nothing."""
    if not ids:
        return "NULL", {}
    names = {f"{prefix}{i}": tid for i, tid in enumerate(ids)}
    return ", ".join(f":{name}" for name in names), names


# --- taking, keeping and giving back leases --------------------------------------------


def acquire(store: Store, owner: str, tenant_ids: Sequence[str],
            ttl_s: float = DEFAULT_LEASE_TTL_S, limit: int | None = None
            ) -> dict[str, dict[str, Any]]:
    """Take the leases of *tenant_ids* that are free, ours, expired, or held by an owner
    whose process is gone (``owners.owner_gone``), in one transaction; at most *limit*.

    Only bots that should run (desired running, tenant allowed to trade) are taken; on
    PostgreSQL a bot another runner is claiming or writing right now is skipped, not
    waited for (the next tick tries again). Taking a bot not ours grows its
    ``lease_epoch`` (the fencing token). Returns the ones taken, with their stored
    ``cycles``, ``restarts`` and ``epoch`` (and ``taken_from``, the dead owner, for
    those taken over before their expiry).
    """
    if not tenant_ids or limit == 0:
        return {}
    left = len(tenant_ids) if limit is None else limit
    taken: dict[str, dict[str, Any]] = {}
    with transaction(store.db, rows_locked=True) as conn:
        now = database_now(store.db)
        for chunk in chunks(list(tenant_ids)):
            if left <= 0:
                break
            ids, params = in_list(chunk)
            held = dict(conn.execute(
                f"SELECT tenant_id, owner FROM bots WHERE tenant_id IN ({ids}) "
                "AND owner IS NOT NULL AND owner != :owner AND lease_expires_at >= :wall",
                {**params, "owner": owner, "wall": now}).fetchall())
            gone = gone_owners(held.values())
            dead_list, dead = in_list(sorted(gone), "dead")
            cursor = conn.execute(
                "UPDATE bots SET owner = :owner, lease_expires_at = :expires, state = 'running', "
                "lease_epoch = CASE WHEN owner = :owner THEN lease_epoch ELSE lease_epoch + 1 END, "
                "started_at = :wall, heartbeat_at = :wall, updated_at = :wall "
                "WHERE tenant_id IN (SELECT b.tenant_id FROM bots b JOIN tenants t "
                f"USING (tenant_id) WHERE b.tenant_id IN ({ids}) "
                "AND b.desired_state = 'running' AND (b.owner IS NULL OR b.owner = :owner "
                "OR b.lease_expires_at IS NULL OR b.lease_expires_at < :wall "
                f"OR b.owner IN ({dead_list})) AND {ELIGIBLE_SQL} LIMIT :limit"
                f"{row_locks(store.db, 'FOR UPDATE OF b SKIP LOCKED')}) "
                "RETURNING tenant_id, cycles, restarts, lease_epoch",
                {**params, **dead, "owner": owner, "expires": later(now, ttl_s), "wall": now,
                 "now": clock.iso(clock.now()), "limit": left},
            )
            for tenant_id, cycles, restarts, epoch in cursor.fetchall():
                taken[tenant_id] = {"cycles": cycles, "restarts": restarts, "epoch": epoch}
                if held.get(tenant_id) in gone:
                    taken[tenant_id]["taken_from"] = held[tenant_id]
                left -= 1
            if gone:
                conn.execute(f"DELETE FROM orchestrators WHERE owner IN ({dead_list})", dead)
    return taken


def holds(store: Store, owner: str, tenant_id: str, epoch: int) -> bool:
    """True while *owner* holds this bot's live lease at fencing token *epoch*."""
    row = store.db.execute(
        "SELECT 1 FROM bots WHERE tenant_id = ? AND owner = ? AND lease_epoch = ? "
        f"AND lease_expires_at >= {database_clock(store.db)}",
        (tenant_id, owner, epoch)).fetchone()
    return row is not None


@dataclass(frozen=True)
class Progress:
    """One bot's counters as its runner last saw them (written on every tick)."""

    tenant_id: str
    state: str
    heartbeat_at: str | None  # its last sign of life, kept when released
    cycles: int
    last_cycle_ms: float | None
    restarts: int
    last_error: str | None


def sync(
    store: Store,
    owner: str,
    *,
    ttl_s: float = DEFAULT_LEASE_TTL_S,
    progress: Sequence[Progress] = (),
    released: Sequence[Progress] = (),
    orchestrator: bool = False,
    silent: Collection[str] = (),
) -> set[str]:
    """One tick of a runner's bookkeeping, in one transaction; returns the bots still ours.

    Renews every lease *owner* holds, records *progress*, beats the heartbeat of every
    bot it holds except the *silent* ones (stuck in a cycle), releases the leases of
    *released* bots (state ``stopped``, counters kept) and, for a registered
    *orchestrator*, beats its heartbeat.
    """
    with transaction(store.db, rows_locked=True) as conn:
        now = database_now(store.db)
        if orchestrator:
            conn.execute("UPDATE orchestrators SET heartbeat_at = ? WHERE owner = ?",
                         (now, owner))
        # Leases and heartbeats in one statement; a silent (stuck) bot's heartbeat stays.
        silent_list, params = in_list(list(silent))
        beat = (f"CASE WHEN tenant_id IN ({silent_list}) THEN heartbeat_at ELSE :now END"
                if silent else ":now")
        # The bots renewed are the ones held, less those released below.
        renewed = {r[0] for r in conn.execute(
            f"UPDATE bots SET lease_expires_at = :expires, heartbeat_at = {beat} "
            "WHERE owner = :owner RETURNING tenant_id",
            {**params, "expires": later(now, ttl_s), "now": now, "owner": owner})}
        for start in range(0, len(progress), _CHUNK):
            _record_progress(conn, owner, now, progress[start:start + _CHUNK])
        conn.executemany(
            f"UPDATE bots SET owner = NULL, lease_expires_at = NULL, state = {RELEASED_STATE}, "
            "heartbeat_at = ?, cycles = ?, last_cycle_ms = ?, restarts = ?, last_error = ?, "
            "updated_at = ? WHERE tenant_id = ? AND owner = ?",
            [(p.state, p.heartbeat_at, p.cycles, p.last_cycle_ms, p.restarts, p.last_error,
              now, p.tenant_id, owner) for p in released],
        )
    return renewed - {p.tenant_id for p in released}


def _record_progress(conn: Connection, owner: str, now: str,
                     progress: Sequence[Progress]) -> None:
    """The counters of *progress* into the rows *owner* holds, in one statement (a
    statement per bot would be a thousand a tick; on PostgreSQL each is parsed,
    planned and run on its own). The casts type the VALUES on PostgreSQL, whose
    parameters carry none for NULL."""
    row = ("(?, ?, CAST(? AS BIGINT), CAST(? AS DOUBLE PRECISION), CAST(? AS BIGINT), "
           "CAST(? AS TEXT))")
    conn.execute(
        "WITH p (tenant_id, state, cycles, last_cycle_ms, restarts, last_error) AS "
        f"(VALUES {', '.join([row] * len(progress))}) "
        "UPDATE bots SET state = p.state, cycles = p.cycles, last_cycle_ms = p.last_cycle_ms, "
        "restarts = p.restarts, last_error = p.last_error, updated_at = ? "
        "FROM p WHERE bots.tenant_id = p.tenant_id AND bots.owner = ?",
        [value for p in progress for value in (p.tenant_id, p.state, p.cycles,
                                                p.last_cycle_ms, p.restarts, p.last_error)]
        + [now, owner])


# The state a released bot keeps: stopped, except a refused bot that is still wanted,
# which stays refused (with its reason in last_error) after its runner is gone, so
# `bots status` and the dashboard still say why it does not run. The parameter is the
# runner's last state (NULL: the state in the row).
RELEASED_STATE = ("CASE WHEN COALESCE(?, state) = 'refused' AND desired_state = 'running' "
                  "THEN 'refused' ELSE 'stopped' END")


def release_all(store: Store, owner: str) -> int:
    """Release every lease *owner* holds (state stopped); return how many."""
    with transaction(store.db, rows_locked=True) as conn:
        cursor = conn.execute(
            f"UPDATE bots SET owner = NULL, lease_expires_at = NULL, state = {RELEASED_STATE}, "
            f"updated_at = {database_clock(store.db)} WHERE owner = ?", (None, owner))
        conn.execute("DELETE FROM orchestrators WHERE owner = ?", (owner,))
    return cursor.rowcount


# --- who holds what -----------------------------------------------------------------


def fair_share(store: Store, owner: str, wanted: int) -> int:
    """How many bots *owner*, a sharing orchestrator, should hold out of *wanted* (see
    "Fair sharing" above): floor or ceil of an even split, the extra ones going to the
    sharing orchestrators that started first."""
    rows = sorted((r for r in live_orchestrators(store) if r["shares"]),
                  key=lambda r: (r["started_at"], r["owner"]))
    sharing = [r["owner"] for r in rows]
    if owner not in sharing:  # not registered (yet, or any more): the newest
        sharing.append(owner)
    held = holders(store)
    apart = {o: n for o, n in held.items() if o not in sharing}
    gone = gone_owners(apart)
    shared = max(wanted - sum(n for o, n in apart.items() if o not in gone), 0)
    each, extra = divmod(shared, len(sharing))
    # Even already: a run holding one of the extra bots keeps it while no more runs
    # hold one than there are extra bots, whoever "should" by start order, so no bot
    # moves once the split is even (a move would only trade places).
    at_ceil = [o for o in sharing if held.get(o, 0) > each]
    if extra and held.get(owner, 0) > each and len(at_ceil) <= extra:
        return each + 1
    return each + (1 if sharing.index(owner) < extra else 0)


def holders(store: Store, tenant_ids: Sequence[str] | None = None) -> dict[str, int]:
    """Who holds a live lease on any of *tenant_ids* (None: any bot set to run):
    owner → how many, most first."""
    counts: dict[str, int] = {}
    for chunk in chunks(list(tenant_ids)) if tenant_ids is not None else [None]:
        ids, params = in_list(chunk) if chunk is not None else ("", {})
        which = f"tenant_id IN ({ids})" if chunk is not None else "desired_state = 'running'"
        for owner, count in store.db.execute(
                f"SELECT owner, count(*) FROM bots WHERE {which} "
                "AND owner IS NOT NULL AND lease_expires_at >= "
                f"{database_clock(store.db)} GROUP BY owner", params).fetchall():
            counts[owner] = counts.get(owner, 0) + count
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def lease_holder(store: Store, tenant_id: str) -> dict[str, Any] | None:
    """Who holds a live lease on this bot (owner, lease_expires_at), or None."""
    row = store.db.execute(
        "SELECT owner, lease_expires_at FROM bots WHERE tenant_id = ? AND owner IS NOT NULL "
        f"AND lease_expires_at >= {database_clock(store.db)}", (tenant_id,),
    ).fetchone()
    return None if row is None else {"owner": row[0], "lease_expires_at": row[1]}


# --- the fence on a bot's writes ------------------------------------------------------


@dataclass(frozen=True)
class Fence:
    """The lease a bot's writes are made under: its owner and fencing token."""

    owner: str
    tenant_id: str
    epoch: int


def fence_guard(store: Store, fence: Fence) -> Guard:
    """The check a bot's write transaction runs first (``sql.Guard``): *fence* is still
    the bot's live lease (the database's clock when the check runs, after the
    transaction's lock), else LeaseLost, which rolls the transaction back. On
    PostgreSQL the row stays locked ``FOR SHARE`` until that transaction ends: a
    takeover cannot commit in between. There it rides in the message that begins the
    transaction, so it costs no round trip of its own."""

    def refusal() -> LeaseLost:
        return LeaseLost(f"the lease of bot {fence.tenant_id} at epoch {fence.epoch} is no "
                         f"longer {fence.owner}'s: write refused")

    return Guard(
        "SELECT lease_epoch FROM bots WHERE tenant_id = :tenant_id AND owner = :owner "
        f"AND lease_epoch = :epoch AND lease_expires_at >= "
        # The store's dialect, not its connection: none is opened here.
        f"{database_clock(store, when_run=True)}{row_locks(store, 'FOR SHARE')}",
        {"tenant_id": fence.tenant_id, "owner": fence.owner, "epoch": fence.epoch},
        refusal)


def check_fence(store: Store, conn: Connection, fence: Fence) -> None:
    """``fence_guard`` run on its own inside an open write transaction *conn*: for a
    transaction that writes for several bots, each behind its own fence (the idle
    turns' batch, ``runtime.idle_turns``); LeaseLost when *fence* is no longer live."""
    guard = fence_guard(store, fence)
    if conn.execute(guard.sql, guard.params).fetchone() is None:
        raise guard.refusal()


class FencedStore(Store):
    """One bot's view of the store: its writes are refused once its lease is gone.

    Reads and everything else are the wrapped store's; every ``transaction()`` first
    checks the fence (``fence_guard``) inside itself, so the ledger's writes (trades,
    fills, reservations, order intents, settlements, equity, metering) stay the one
    choke point they are, without a token threaded through each.
    """

    def __init__(self, store: Store, fence: Fence) -> None:
        # A TenantManager (the benchmarks pass one where a store goes) is fenced
        # through the store it holds.
        store = getattr(store, "store", store)
        super().__init__(actor=store.actor)
        self.inner = store
        self.fence = fence
        self.guard = fence_guard(store, fence)
        self.dialect = store.dialect
        self.location = store.location

    def __getattr__(self, name: str) -> Any:
        if name == "inner":  # not set yet (a copy being built): no recursion
            raise AttributeError(name)
        return getattr(self.inner, name)  # db_path, url, ...: the wrapped store's

    @property
    def db(self) -> Any:
        """This thread's connection (the wrapped store's)."""
        return self.inner.db

    def close(self) -> None:
        """Close this thread's connection."""
        self.inner.close()

    def confirm_lease(self) -> None:
        """Raise LeaseLost unless this bot's lease is still this runner's, now."""
        fence = self.fence
        if not holds(self.inner, fence.owner, fence.tenant_id, fence.epoch):
            raise LeaseLost(f"the lease of bot {fence.tenant_id} at epoch {fence.epoch} is "
                            f"no longer {fence.owner}'s: exchange request not sent")

    @contextmanager
    def transaction(self, tenant_id: str | None = None) -> Iterator[Connection]:  # type: ignore[override]
        """A write transaction on the wrapped store's connection, refused (LeaseLost)
        unless this bot's lease is still this runner's (``fence_guard``)."""
        with transaction(self.inner.db, tenant_id, guard=self.guard) as conn:
            yield conn


# --- the orchestrator registry --------------------------------------------------------


def register_orchestrator(store: Store, owner: str, *, shares: bool = True) -> None:
    """Record a running orchestrator (and forget ones silent for a day); *shares*: it
    takes its fair share of every bot (``fair_share``), not only tenants it was given."""
    host, pid, _ = owner.rsplit(":", 2)
    # Only the registry's rows: a machine stopped inside another bot's write (its
    # tenant's lock held until the server ends its session) must not keep a run from
    # starting, as the whole database's write lock would.
    with transaction(store.db, rows_locked=True) as conn:
        now = database_now(store.db)
        conn.execute("DELETE FROM orchestrators WHERE heartbeat_at < ?",
                     (later(now, -ORCHESTRATOR_FORGET_S),))
        conn.execute(
            "INSERT INTO orchestrators (owner, pid, host, started_at, heartbeat_at, shares) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (owner) DO UPDATE SET "
            "heartbeat_at = excluded.heartbeat_at, shares = excluded.shares",
            (owner, int(pid), host, now, now, int(shares)))


def unregister_orchestrator(store: Store, owner: str) -> None:
    """Remove a stopping orchestrator's row."""
    with transaction(store.db, rows_locked=True) as conn:
        conn.execute("DELETE FROM orchestrators WHERE owner = ?", (owner,))


def live_orchestrators(store: Store, fresh_s: float = ORCHESTRATOR_FRESH_S
                       ) -> list[dict[str, Any]]:
    """Orchestrators whose heartbeat is fresher than *fresh_s* seconds and whose process
    is not known to be gone, newest first."""
    if fresh_s <= 0:
        raise InvalidInput(f"fresh_s must be > 0, got {fresh_s}")
    rows = store.select("SELECT owner, pid, host, started_at, heartbeat_at, shares FROM "
                        "orchestrators WHERE heartbeat_at >= ? ORDER BY heartbeat_at DESC",
                        (later(database_now(store.db), -fresh_s),))
    gone = gone_owners(r["owner"] for r in rows)
    return [r for r in rows if r["owner"] not in gone]
