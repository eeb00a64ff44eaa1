"""API keys of the REST API: created, listed, revoked and checked here, and only here.

A key is ``bpk_<key_id>_<secret>``: a public id (what lists, audit rows and tokens
name) and at least 32 random bytes. It is shown once, when it is made; the database
keeps only a SHA-256 of the secret (the secret is random, so a plain hash cannot be
reversed by guessing), and a key is checked by comparing hashes in constant time.

An admin key reaches every tenant; a tenant key reaches one. Revoking a key (it stays
listed, with ``revoked_at``) invalidates it and every token made from it: the server
looks the key up on every request. Purging a tenant removes its keys.

Library code: no web framework here. The server (``botpoly_admin.server``) and the
``api keys`` commands call these functions.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from botpoly_admin import audit, clock
from botpoly_admin.errors import CredentialsError, NotFound
from botpoly_admin.store import Store, insertion_order, select, transaction
from botpoly_admin.text import check_text

PREFIX = "bpk"
SECRET_BYTES = 32
KEY_ID_HEX = 12
MAX_NAME_LENGTH = 200
ADMIN = "admin"
TENANT = "tenant"
# bpk_<12 hex>_<base64url of 32+ bytes>: anything else is malformed, refused unread.
KEY_RE = re.compile(rf"{PREFIX}_([0-9a-f]{{{KEY_ID_HEX}}})_([A-Za-z0-9_-]{{43,128}})")
KEY_ID_RE = re.compile(rf"[0-9a-f]{{{KEY_ID_HEX}}}")


class InvalidApiKey(CredentialsError):
    """A presented API key (or a token made from one) that is malformed, unknown or
    revoked. The message never repeats what was presented."""


@dataclass(frozen=True)
class ApiKey:
    """One stored key (never its secret)."""

    key_id: str
    name: str | None
    scope: str  # admin | tenant
    tenant_id: str | None
    created_at: str
    created_by: str
    last_used_at: str | None
    revoked_at: str | None

    @property
    def is_admin(self) -> bool:
        """Whether the key reaches every tenant."""
        return self.scope == ADMIN

    @property
    def scope_claim(self) -> str:
        """The token's ``scope`` claim: ``admin`` or ``tenant:<tenant id>``."""
        return ADMIN if self.is_admin else f"{TENANT}:{self.tenant_id}"

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape of a key (``api keys list --json``)."""
        return {"key_id": self.key_id, "name": self.name, "scope": self.scope,
                "tenant_id": self.tenant_id, "created_at": self.created_at,
                "created_by": self.created_by, "last_used_at": self.last_used_at,
                "revoked_at": self.revoked_at}


@dataclass(frozen=True)
class IssuedKey:
    """A key just made: the stored part, and the key itself (shown once, never kept)."""

    key: ApiKey
    api_key: str

    def to_dict(self) -> dict[str, Any]:
        """The stored fields plus ``api_key``."""
        return {**self.key.to_dict(), "api_key": self.api_key}


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _key(row: Mapping[str, Any]) -> ApiKey:
    return ApiKey(row["key_id"], row["name"], row["scope"], row["tenant_id"],
                  row["created_at"], row["created_by"], row["last_used_at"], row["revoked_at"])


def create_key(store: Store, *, tenant_id: str | None, name: str | None = None) -> IssuedKey:
    """Make a key: an admin key without *tenant_id*, else a key for that tenant only.

    Returns the key itself once (``IssuedKey.api_key``); only its hash is stored.
    Raises NotFound for an unknown tenant id (resolve emails and prefixes first).
    """
    label = (check_text(name, "name", MAX_NAME_LENGTH) or None) if name is not None else None
    key_id = secrets.token_hex(KEY_ID_HEX // 2)
    secret = secrets.token_urlsafe(SECRET_BYTES)
    row = {
        "key_id": key_id, "name": label, "scope": ADMIN if tenant_id is None else TENANT,
        "tenant_id": tenant_id, "secret_hash": _hash(secret),
        "created_at": clock.iso(clock.now()), "created_by": store.actor,
        "last_used_at": None, "revoked_at": None,
    }
    with transaction(store.db) as conn:
        if tenant_id is not None and conn.execute(
                "SELECT 1 FROM tenants WHERE tenant_id = ?", (tenant_id,)).fetchone() is None:
            raise NotFound(f"no tenant with id {tenant_id!r}")
        conn.execute(f"INSERT INTO api_keys ({', '.join(row)}) "
                     f"VALUES ({', '.join('?' * len(row))})", tuple(row.values()))
        audit.record(conn, store.actor,
                     audit.ApiKeyCreated(tenant_id, key_id, row["scope"], label))
    return IssuedKey(_key(row), f"{PREFIX}_{key_id}_{secret}")


def get_key(store: Store, key_id: str) -> ApiKey:
    """The key with this id (revoked ones included); NotFound otherwise."""
    if not KEY_ID_RE.fullmatch(key_id or ""):
        raise NotFound(f"no API key {key_id!r} (a key id is {KEY_ID_HEX} hex characters)")
    rows = select(store.db, "SELECT * FROM api_keys WHERE key_id = ?", (key_id,))
    if not rows:
        raise NotFound(f"no API key {key_id!r}")
    return _key(rows[0])


def list_keys(store: Store, *, tenant_id: str | None = None,
              include_revoked: bool = False) -> list[ApiKey]:
    """Keys, oldest first: every key, or one tenant's; revoked ones only if asked."""
    clauses = [] if include_revoked else ["revoked_at IS NULL"]
    params: dict[str, Any] = {}
    if tenant_id is not None:
        clauses.append("tenant_id = :tenant_id")
        params["tenant_id"] = tenant_id
    where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
    return [_key(r) for r in select(
        store.db, f"SELECT * FROM api_keys{where} ORDER BY created_at, "
        f"{insertion_order(store.db, 'key_id')}", params)]


def revoke_key(store: Store, key_id: str) -> ApiKey:
    """Revoke a key (and so every token made from it); revoking twice changes nothing."""
    key = get_key(store, key_id)
    if key.revoked_at is not None:
        return key
    with transaction(store.db) as conn:
        conn.execute("UPDATE api_keys SET revoked_at = ? WHERE key_id = ? "
                     "AND revoked_at IS NULL", (clock.iso(clock.now()), key.key_id))
        audit.record(conn, store.actor, audit.ApiKeyRevoked(key.tenant_id, key.key_id))
    return get_key(store, key.key_id)


def active_key(store: Store, key_id: str) -> ApiKey:
    """The key behind a token: InvalidApiKey if it is unknown (its tenant was purged)
    or revoked."""
    rows = select(store.db, "SELECT * FROM api_keys WHERE key_id = ?", (key_id,))
    if not rows or rows[0]["revoked_at"] is not None:
        raise InvalidApiKey("the API key of this token was revoked or no longer exists")
    return _key(rows[0])


def authenticate(store: Store, presented: str, *, touch: bool = False) -> ApiKey:
    """The active key *presented* is, or InvalidApiKey (malformed, unknown, wrong secret
    or revoked: one message for all but the first, so nothing can be probed).

    *touch* records the time of use (``last_used_at``), e.g. when a token is issued.
    """
    match = KEY_RE.fullmatch((presented or "").strip())
    if match is None:
        raise InvalidApiKey("malformed API key (expected bpk_<id>_<secret>)")
    key_id, secret = match.groups()
    rows = select(store.db, "SELECT * FROM api_keys WHERE key_id = ?", (key_id,))
    # Compared even when there is no row, so an unknown id takes as long as a wrong secret.
    stored = rows[0]["secret_hash"] if rows else _hash("")
    if not hmac.compare_digest(stored, _hash(secret)) or not rows \
            or rows[0]["revoked_at"] is not None:
        raise InvalidApiKey("unknown or revoked API key")
    if touch:
        with transaction(store.db) as conn:
            conn.execute("UPDATE api_keys SET last_used_at = ? WHERE key_id = ?",
                         (clock.iso(clock.now()), key_id))
    return _key(rows[0])

