"""The vault: tenants' credentials, encrypted, and the keys that encrypt them.

Keys, key files and masking are ``botpoly_admin.secrets`` (no database there); the
vault keeps credentials in the ``credentials`` table and the key check in ``meta``.

Only what needs a plaintext needs a key (docs/architecture.md, "Keys and
credentials"): storing a credential, ``Vault.get`` (the live broker), ``keys
rotate``. A masked view (``masked``) decrypts nothing: it shows the hint stored
beside the ciphertext when the credential was set (``mask`` of the value: ``****``
and at most its last 4 characters), or says the credential cannot be decrypted when
no configured key has the id it was encrypted under. So a lost, wrong or malformed
key never keeps an operator from listing, showing or suspending a tenant.

The installation's own secrets (``installation_secrets``: the secret that signs the
REST API's tokens) are kept the same way, under the same keys: ``keys rotate``
re-encrypts them with the credentials, ``keys drop-undecryptable`` drops one that
does not decrypt, and ``db check`` decrypts them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from botpoly_admin import audit, clock
from botpoly_admin.errors import Conflict, CredentialsError, InvalidInput
from botpoly_admin.models import CREDENTIAL_NAMES
from botpoly_admin.secrets import (
    CHECK_PLAINTEXT,
    UNDECRYPTABLE,
    KeyRing,
    archive_file_for,
    archive_keys,
    generate_key,
    key_file_for,
    key_source_stamp,
    load_keyring,
    mask,
    write_key_file,
)
from botpoly_admin.store import Store, dialect_of

# What a masked view shows for a credential stored before hints were (its hint is
# written the next time the vault decrypts it: ``Vault.get``, ``keys rotate``).
HINT_UNKNOWN = "set"


def check_name(name: str) -> None:
    """Raise InvalidInput unless *name* is a credential's name."""
    if name not in CREDENTIAL_NAMES:
        raise InvalidInput(
            f"unknown credential {name!r} (choose from {', '.join(CREDENTIAL_NAMES)})"
        )


def key_matches(ring: KeyRing, check_token: str) -> bool:
    """The key check: whether *ring* decrypts the database's check token."""
    try:
        return ring.decrypt(check_token) == CHECK_PLAINTEXT.decode()
    except CredentialsError:
        return False


def _key_check(store: Store) -> str | None:
    row = store.db.execute("SELECT value FROM meta WHERE key = 'key_check'").fetchone()
    return None if row is None else row[0]


def _readable_key_ids(store: Store) -> set[str]:
    """Ids of the configured keys, retired ones included; none when no key is
    configured or a key is malformed (read without decrypting anything)."""
    try:
        ring = load_keyring(store.db_path, create=False)
    except CredentialsError:
        return set()
    return set() if ring is None else {*ring.key_ids, *ring.retired_ids}


def masked(store: Store, tenant_ids: Sequence[str]) -> dict[str, dict[str, str]]:
    """What each stored credential of these tenants shows, by tenant and name: its
    hint, or ``UNDECRYPTABLE`` when it was encrypted under a key that is not
    configured. Nothing is decrypted."""
    if not tenant_ids:
        return {}
    columns = "SELECT tenant_id, name, key_id, hint FROM credentials"
    if len(tenant_ids) <= 500:
        rows = store.db.execute(
            f"{columns} WHERE tenant_id IN ({', '.join('?' * len(tenant_ids))})",
            list(tenant_ids)).fetchall()
    else:  # a whole listing: one scan beats a huge IN list
        wanted = set(tenant_ids)
        rows = [r for r in store.db.execute(columns).fetchall() if r[0] in wanted]
    if not rows:
        return {}
    readable = _readable_key_ids(store)
    shown: dict[str, dict[str, str]] = {}
    for tenant_id, name, stored_under, hint in rows:
        view = (hint or HINT_UNKNOWN) if stored_under in readable else UNDECRYPTABLE
        shown.setdefault(tenant_id, {})[name] = view
    return shown


def _undecryptable(row: dict[str, Any], ring: KeyRing) -> str:
    """Why a stored credential does not decrypt, in words an operator can act on."""
    name, stored_under = row["name"], row["key_id"]
    if stored_under not in ring.key_ids + ring.retired_ids:
        return (f"{name} does not decrypt with the current keys: it was encrypted under key "
                f"{stored_under}, which is not configured (keys: {', '.join(ring.key_ids)}); "
                "rotated or wrong key file? Restore that key or set the credential again")
    return (f"{name} does not decrypt with the current keys although key {stored_under} is "
            "configured: its ciphertext is damaged; set the credential again")


def _drop_plan(conn: Any, ring: KeyRing | None) -> tuple[list[dict[str, Any]], bool]:
    """The credentials and installation secrets *ring* cannot decrypt (an installation
    secret's row has no tenant and no email), and whether the key check is stale."""
    fernet = ring.fernet() if ring is not None else None

    def decrypts(token: str) -> bool:
        if fernet is None:
            return False
        try:
            fernet.decrypt(token.encode())
        except Exception:  # noqa: BLE001 - a wrong key or a damaged token alike
            return False
        return True

    broken = [
        {"tenant_id": tenant_id, "email": email, "name": name, "key_id": stored_under}
        for tenant_id, email, name, ciphertext, stored_under in conn.execute(
            "SELECT c.tenant_id, t.email, c.name, c.ciphertext, c.key_id "
            "FROM credentials c JOIN tenants t USING (tenant_id) ORDER BY t.email, c.name")
        if not decrypts(ciphertext)
    ] + [
        {"tenant_id": None, "email": None, "name": name, "key_id": stored_under}
        for name, ciphertext, stored_under in conn.execute(
            "SELECT name, ciphertext, key_id FROM installation_secrets ORDER BY name")
        if not decrypts(ciphertext)
    ]
    check = conn.execute("SELECT value FROM meta WHERE key = 'key_check'").fetchone()
    stale = check is not None and (ring is None or not key_matches(ring, check[0]))
    return broken, stale


class Vault:
    """Credentials of every tenant of one store, and the keys verified for it.

    The verified keys are cached while the check token and the key source stay the
    same, so a long-running process (``run``) picks up a ``keys rotate`` or a
    restored key file done by another one.
    """

    def __init__(self, store: Store, notify: Callable[[str], None] | None = None) -> None:
        """*notify* is told where a new key file was made (only storing a credential
        makes one)."""
        self.store = store
        self.notify = notify
        self._verified: tuple[tuple[object, ...], KeyRing] | None = None

    # --- the keys -------------------------------------------------------------------

    def _local_dir(self) -> None:
        """Make the directory a new key file goes into when it is ours to make: a
        PostgreSQL database's ``data/`` (a SQLite file's directory exists already)."""
        if dialect_of(self.store.db) != "sqlite":
            key_file_for(self.store.db_path).parent.mkdir(parents=True, exist_ok=True)

    def keyring(self, *, create: bool = False) -> KeyRing:
        """The keys for this database, verified against its key check token (written
        first when there is none; *create* makes a key file when there is no key)."""
        store = self.store
        check = _key_check(store)
        stamp = (check, key_source_stamp(store.db_path))
        if self._verified is not None and self._verified[0] == stamp:
            return self._verified[1]
        if create and check is None:
            self._local_dir()
        ring = load_keyring(store.db_path, create=create and check is None,
                            notify=self.notify)
        if ring is None:
            raise CredentialsError(
                "no secret key configured: set BOTPOLY_SECRET_KEYS or restore the key file "
                f"({key_file_for(store.db_path)})"
            )
        if check is None:
            with store.transaction() as conn:
                conn.execute("INSERT INTO meta (key, value) VALUES ('key_check', ?) "
                             "ON CONFLICT DO NOTHING",
                             (ring.fernet().encrypt(CHECK_PLAINTEXT).decode(),))
            check = _key_check(store)
        if check is None or not key_matches(ring, check):
            where = "BOTPOLY_SECRET_KEYS" if ring.source == "env" else f"key file {ring.path}"
            raise CredentialsError(
                f"the secret key in {where} does not match this database (wrong key?)"
            )
        self._verified = ((check, key_source_stamp(store.db_path)), ring)
        return ring

    def status(self) -> dict[str, Any]:
        """Where the keys come from, their fingerprints, the archive of retired keys and
        how many secrets each key holds (never key material)."""
        counts = _secrets_by_key(self.store)
        check = _key_check(self.store)
        ring = load_keyring(self.store.db_path, create=False)
        keys = []
        verified = None
        if ring is not None:
            ring.fernet()  # a malformed key is an error here too, not a "primary" key
            verified = None if check is None else key_matches(ring, check)
            keys = [{"key_id": kid, "primary": index == 0, "secrets": counts.get(kid, 0)}
                    for index, kid in enumerate(ring.key_ids)]
        archive = archive_file_for(ring.path) if ring is not None and ring.path else None
        return {
            "source": None if ring is None else ring.source,
            "key_file": None if ring is None or ring.path is None else str(ring.path),
            "keys": keys,
            "archive": str(archive) if archive is not None and archive.exists() else None,
            "retired": [{"key_id": kid, "secrets": counts.get(kid, 0)}
                        for kid in (ring.retired_ids if ring is not None else [])],
            "secrets_total": sum(counts.values()),
            "secrets_by_key": counts,
            "verified": verified,
        }

    # --- credentials ----------------------------------------------------------------

    def store_secret(self, conn: Any, tenant_id: str, name: str, value: Any) -> None:
        """Store (or, for None, remove) one credential inside the caller's transaction,
        with its hint for masked views."""
        check_name(name)
        if value is None:
            conn.execute("DELETE FROM credentials WHERE tenant_id = ? AND name = ?",
                         (tenant_id, name))
            return
        # Stored as given: spaces can be part of a secret (``--stdin`` drops only the
        # line break a pipeline adds).
        text = str(value)
        if not text.strip():
            raise InvalidInput(f"{name} must not be empty")
        ring = self.keyring(create=True)
        conn.execute(
            "INSERT INTO credentials (tenant_id, name, ciphertext, key_id, updated_at, hint) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (tenant_id, name) DO UPDATE SET "
            "ciphertext = excluded.ciphertext, key_id = excluded.key_id, "
            "updated_at = excluded.updated_at, hint = excluded.hint",
            (tenant_id, name, ring.encrypt(text), ring.primary_id, clock.iso(clock.now()),
             mask(text)),
        )

    def set(self, tenant_id: str, name: str, value: str) -> None:
        """Store one credential of an existing tenant, encrypted under the primary key
        (audited without the value)."""
        check_name(name)
        self.keyring(create=True)  # verify the key before the write lock is taken
        with self.store.transaction() as conn:
            self.store_secret(conn, tenant_id, name, value)
            audit.record(conn, self.store.actor, audit.CredentialSet(tenant_id, name))

    def clear(self, tenant_id: str, name: str | None = None) -> int:
        """Remove one credential (or all of a tenant's); return how many were removed."""
        if name is not None:
            check_name(name)
        with self.store.transaction() as conn:
            if name is None:
                cursor = conn.execute("DELETE FROM credentials WHERE tenant_id = ?",
                                      (tenant_id,))
            else:
                cursor = conn.execute(
                    "DELETE FROM credentials WHERE tenant_id = ? AND name = ?", (tenant_id, name))
            audit.record(conn, self.store.actor,
                         audit.CredentialsCleared(tenant_id, name or "all", cursor.rowcount))
        return cursor.rowcount

    def get(self, tenant_id: str) -> dict[str, str]:
        """Decrypted credentials of a tenant. Only the live broker should call this.

        Raises CredentialsError naming the credential that does not decrypt and why:
        encrypted under a key that is no longer configured, or damaged.
        """
        rows = self.store.scope(tenant_id).rows("credentials", order_by="name")
        if not rows:
            return {}
        ring = self.keyring()
        plain = {}
        for row in rows:
            try:
                plain[row["name"]] = ring.decrypt(row["ciphertext"])
            except CredentialsError:
                raise CredentialsError(_undecryptable(row, ring)) from None
        unhinted = [r for r in rows if r["hint"] is None]
        if unhinted:
            with self.store.transaction() as conn:
                for row in unhinted:
                    _write_hint(conn, row, plain[row["name"]])
        return plain

    def count(self) -> int:
        """How many secrets are stored, credentials and the installation's (what ``keys
        rotate`` would re-encrypt)."""
        return int(self.store.db.execute(
            "SELECT (SELECT count(*) FROM credentials) "
            "+ (SELECT count(*) FROM installation_secrets)").fetchone()[0])

    # --- key maintenance ------------------------------------------------------------

    def rotate(self, progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
        """Re-encrypt every secret under a new primary key, in one transaction
        (``TenantManager.rotate_keys`` says how the key file and archive change).

        Refused, before anything changes, while a credential does not decrypt with the
        current keys (dropping the old keys could only make it worse to recover).
        """
        ring = self.keyring()
        broken, _ = _drop_plan(self.store.db.conn, ring)
        if broken:
            shown = ", ".join(f"{r['name']} of {r['email'] or 'the installation'}"
                              for r in broken[:5])
            more = f" and {len(broken) - 5} more" if len(broken) > 5 else ""
            raise CredentialsError(
                f"cannot rotate the keys: {len(broken)} credential(s) do not decrypt with the "
                f"current keys ({shown}{more}); restore the key they were encrypted with, or "
                "set or clear them (botpoly-admin tenants credentials set|clear), then rotate "
                "(nothing was changed)")
        archive = None
        if ring.source == "file":
            assert ring.path is not None
            archive = archive_keys(ring.path, ring.keys)
            new_ring = KeyRing([generate_key(), *ring.keys], "file", ring.path, ring.retired)
            write_key_file(ring.path, new_ring.keys, replace=True)
        else:
            new_ring = ring
        fernet = new_ring.fernet()
        with self.store.transaction() as conn:
            rows = conn.execute("SELECT tenant_id, name, ciphertext, hint, key_id "
                                "FROM credentials").fetchall()
            step = max(1, len(rows) // 100)
            for done, (tenant_id, name, ciphertext, hint, stored_under) in enumerate(rows, 1):
                if hint is None:
                    _write_hint(conn, {"tenant_id": tenant_id, "name": name, "hint": hint,
                                       "ciphertext": ciphertext, "key_id": stored_under},
                                new_ring.decrypt(ciphertext))
                conn.execute(
                    "UPDATE credentials SET ciphertext = ?, key_id = ? "
                    "WHERE tenant_id = ? AND name = ?",
                    (fernet.rotate(ciphertext.encode()).decode(), new_ring.primary_id,
                     tenant_id, name),
                )
                if progress is not None and (done % step == 0 or done == len(rows)):
                    progress(done, len(rows))
            installation = _rotate_installation_secrets(conn, fernet, new_ring.primary_id)
            conn.execute("INSERT INTO meta (key, value) VALUES ('key_check', ?) "
                         "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                         (fernet.encrypt(CHECK_PLAINTEXT).decode(),))
            secrets = len(rows) + installation
            audit.record(conn, self.store.actor, audit.KeysRotated(
                None, secrets, new_ring.primary_id, ring.key_ids if archive else []))
        if ring.source == "file":
            assert new_ring.path is not None
            write_key_file(new_ring.path, new_ring.keys[:1], replace=True)
            new_ring = KeyRing(new_ring.keys[:1], "file", new_ring.path)
        self._verified = None  # reloaded and verified against the new check token
        return {"secrets": secrets, "primary_key_id": new_ring.primary_id,
                "source": new_ring.source,
                "key_file": str(new_ring.path) if new_ring.path else None,
                "archive": str(archive) if archive else None}

    def generate_key_file(self) -> dict[str, Any]:
        """Create the key file beside the database.

        Refused if one exists, and if the database already holds encrypted
        credentials or a key check: a new key could never read them, and the
        credentials would be lost in silence.
        """
        path = key_file_for(self.store.db_path)
        secrets = self.count()
        check = _key_check(self.store)
        if (secrets or check) and not path.exists():
            held = (f"{secrets} encrypted credential(s) and a key check" if secrets
                    else "a key check (credentials were encrypted here before)")
            raise Conflict(
                f"this database already holds {held} made with another key, which a new key "
                f"could not read: restore the key file {path} from your backup (or set "
                "BOTPOLY_SECRET_KEYS); to replace a key you still have, use `keys "
                "rotate`; if the key is lost for good, `keys drop-undecryptable` removes what "
                "it encrypted, then run `keys generate` (nothing was changed)")
        self._local_dir()
        write_key_file(path, [generate_key()])
        with self.store.transaction() as conn:
            audit.record(conn, self.store.actor, audit.KeyGenerated(None, str(path)))
        ring = load_keyring(self.store.db_path, create=False)
        assert ring is not None
        return {"key_file": str(path), "key_id": ring.primary_id}

    def undecryptable(self) -> dict[str, Any]:
        """What ``drop_undecryptable`` would do, changing nothing: the credentials the
        current keys (retired ones included) cannot decrypt (tenant, email, name, the
        key id they were encrypted under), and whether the key check is stale."""
        broken, stale = _drop_plan(self.store.db.conn, self._usable_ring())
        return {"dropped": broken, "key_check_reset": stale}

    def _usable_ring(self) -> KeyRing | None:
        """The configured keys, or None when there are none (a malformed or unsafe key
        is an error: nothing is dropped over a typo)."""
        return load_keyring(self.store.db_path, create=False)

    def drop_undecryptable(self) -> dict[str, Any]:
        """Delete the credentials the current keys cannot decrypt, for good (audited).

        The recovery from a lost key: afterwards the keys in place own the database (a
        key check that does not match them is replaced by theirs, or removed when no
        key is configured, so ``keys generate`` can make one). What to drop is decided
        again inside the write transaction.
        """
        ring = self._usable_ring()
        with self.store.transaction() as conn:
            broken, stale = _drop_plan(conn, ring)
            for row in broken:
                if row["tenant_id"] is None:
                    conn.execute("DELETE FROM installation_secrets WHERE name = ?",
                                 (row["name"],))
                else:
                    conn.execute("DELETE FROM credentials WHERE tenant_id = ? AND name = ?",
                                 (row["tenant_id"], row["name"]))
            if stale and ring is None:
                conn.execute("DELETE FROM meta WHERE key = 'key_check'")
            elif stale:
                assert ring is not None
                conn.execute("UPDATE meta SET value = ? WHERE key = 'key_check'",
                             (ring.fernet().encrypt(CHECK_PLAINTEXT).decode(),))
            if broken or stale:
                per_tenant: dict[str, list[str]] = {}
                for row in broken:  # an installation secret's row under "installation"
                    per_tenant.setdefault(row["tenant_id"] or "installation", []).append(
                        row["name"])
                audit.record(conn, self.store.actor,
                             audit.UndecryptableDropped(None, len(broken), per_tenant, stale))
        self._verified = None
        return {"dropped": broken, "key_check_reset": stale}


def _write_hint(conn: Any, row: dict[str, Any], plaintext: str) -> None:
    """Fill in the hint of a credential stored before hints were, if it is still the
    same ciphertext."""
    conn.execute("UPDATE credentials SET hint = ? WHERE tenant_id = ? AND name = ? "
                 "AND ciphertext = ? AND hint IS NULL",
                 (mask(plaintext), row["tenant_id"], row["name"], row["ciphertext"]))


def _secrets_by_key(store: Store) -> dict[str, int]:
    """How many secrets (credentials and the installation's) each key id encrypts."""
    counts: dict[str, int] = {}
    for table in ("credentials", "installation_secrets"):
        for kid, n in store.db.execute(f"SELECT key_id, count(*) FROM {table} GROUP BY key_id"):
            counts[kid] = counts.get(kid, 0) + n
    return counts


def _rotate_installation_secrets(conn: Any, fernet: Any, primary_id: str) -> int:
    """Re-encrypt the installation's secrets under *primary_id* inside ``keys rotate``'s
    transaction; return how many. Their values stay: a token signed before stays valid."""
    stored = conn.execute("SELECT name, ciphertext FROM installation_secrets").fetchall()
    for name, ciphertext in stored:
        conn.execute("UPDATE installation_secrets SET ciphertext = ?, key_id = ? WHERE name = ?",
                     (fernet.rotate(ciphertext.encode()).decode(), primary_id, name))
    return len(stored)


# --- the installation's secrets -----------------------------------------------------------


def installation_secret(vault: Vault, name: str, make: Callable[[], str]) -> str:
    """The installation's secret *name*, decrypted. When the database has none yet,
    *make* gives its value, stored encrypted under the primary key (a key file is made
    if no key is configured, as for a credential). Processes that make it at once, on
    any machine, agree: the first stored wins and the others read it.

    Raises CredentialsError when the keys do not match the database, or the stored
    secret does not decrypt (``keys drop-undecryptable`` removes it; it is then made
    again).
    """
    row = _installation_row(vault.store, name)
    if row is None:
        ring = vault.keyring(create=True)
        value = make()
        with vault.store.transaction() as conn:
            conn.execute("INSERT INTO installation_secrets (name, ciphertext, key_id, "
                         "updated_at) VALUES (?, ?, ?, ?) ON CONFLICT (name) DO NOTHING",
                         (name, ring.encrypt(value), ring.primary_id,
                          clock.iso(clock.wall_now())))
        row = _installation_row(vault.store, name)
        assert row is not None
    ring = vault.keyring()  # a missing or wrong key is said as such
    try:
        return ring.decrypt(row[0])
    except CredentialsError:
        raise CredentialsError(
            f"the installation's {name} does not decrypt with the current keys although "
            f"they match this database (encrypted under key {row[1]}): `keys "
            "drop-undecryptable` removes it, and it is made again") from None


def _installation_row(store: Store, name: str) -> tuple[str, str] | None:
    row = store.db.execute("SELECT ciphertext, key_id FROM installation_secrets WHERE name = ?",
                           (name,)).fetchone()
    return None if row is None else (row[0], row[1])
