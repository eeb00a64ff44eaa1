"""Who is calling, and what it may reach.

An API key (``botpoly_admin.apikeys``) is exchanged for a JWT at ``POST /token``;
every other call carries the token (``Authorization: Bearer``). Admin keys are also
accepted as they are, in the guide's ``api-key`` header (or ``X-API-Key``).

Tokens are HS256 with the algorithm pinned on decode (``alg: none``, RS256 and any
other algorithm are refused), live 15 minutes, and carry ``sub`` (the key id),
``scope`` (``admin`` or ``tenant:<id>``) and ``jti``. They are signed with the
installation's secret ``api_token_secret``, kept in the database encrypted under the
installation's keys like a credential (``Vault.installation_secret``), so every
``serve`` of one database, on one machine or many, accepts the others' tokens. The
key behind a token is looked up on every request, so revoking a key invalidates its
tokens at once.
"""

from __future__ import annotations

import copy
import logging
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from botpoly_admin import apikeys
from botpoly_admin.api import TenantManager
from botpoly_admin.apikeys import ApiKey, InvalidApiKey
from botpoly_admin.errors import NotFound
from botpoly_admin.models import TenantConfig
from botpoly_admin.secrets import key_file_for, read_key_file
from botpoly_admin.store import Store
from botpoly_admin.vault import Vault, installation_secret

log = logging.getLogger(__name__)

ALGORITHM = "HS256"
TOKEN_TTL_S = 15 * 60
SECRET_BYTES = 64
SECRET_NAME = "api_token_secret"
REQUIRED_CLAIMS = ("exp", "iat", "sub", "scope", "jti")


def jwt_secret_file_for(db_path: Path) -> Path:
    """Where versions before the secret moved into the database kept it, beside the
    key file: ``<key file stem>.jwt``. Read once, to adopt it."""
    return key_file_for(db_path).with_suffix(".jwt")


def load_jwt_secret(vault: Vault) -> bytes:
    """The installation's token-signing secret, made on first use.

    A secret file of an older version (``jwt_secret_file_for``) is adopted on the first
    start that finds none in the database, so the tokens it signed stay valid; the
    file is then removed (the database holds it now, encrypted). Removing the row
    (``keys drop-undecryptable`` when it does not decrypt) invalidates every token
    issued so far; the API keys stay valid.
    """
    legacy = jwt_secret_file_for(vault.store.db_path)

    def make() -> str:
        if legacy.exists():
            return read_key_file(legacy)[0].decode()
        return secrets.token_urlsafe(SECRET_BYTES)

    secret = installation_secret(vault, SECRET_NAME, make)
    if legacy.exists():
        legacy.unlink(missing_ok=True)  # another server's start may remove it first
        log.warning("the token-signing secret is kept in the database now (encrypted); "
                    "removed the old secret file %s", legacy)
    return secret.encode()


class Tokens:
    """Issues and checks the API's JWTs. *now* (seconds since the epoch) is injectable."""

    def __init__(self, secret: bytes, *, ttl_s: int = TOKEN_TTL_S,
                 now: Callable[[], float] = time.time) -> None:
        self._secret = secret
        self.ttl_s = ttl_s
        self._now = now

    def issue(self, key: ApiKey) -> dict[str, Any]:
        """A token for *key*: ``{"access_token", "token_type", "expires_in"}``."""
        issued = int(self._now())
        claims = {"sub": key.key_id, "scope": key.scope_claim, "jti": uuid.uuid4().hex,
                  "iat": issued, "exp": issued + self.ttl_s}
        return {"access_token": jwt.encode(claims, self._secret, algorithm=ALGORITHM),
                "token_type": "bearer", "expires_in": self.ttl_s}

    def claims(self, token: str) -> dict[str, Any]:
        """The claims of a token this server signed and that has not expired; else
        InvalidApiKey saying which (never repeating the token)."""
        try:
            claims = jwt.decode(token, self._secret, algorithms=[ALGORITHM],
                                options={"require": list(REQUIRED_CLAIMS), "verify_exp": False,
                                         "verify_iat": False})
        except jwt.InvalidAlgorithmError:
            raise InvalidApiKey(f"invalid token: only {ALGORITHM} tokens of this server "
                                "are accepted") from None
        except jwt.InvalidSignatureError:
            raise InvalidApiKey("invalid token: bad signature") from None
        except jwt.MissingRequiredClaimError as exc:
            raise InvalidApiKey(f"invalid token: no {exc.claim!r} claim") from None
        except jwt.InvalidTokenError:
            raise InvalidApiKey("invalid token: malformed") from None
        expires = claims["exp"]
        if isinstance(expires, bool) or not isinstance(expires, int | float):
            raise InvalidApiKey("invalid token: malformed 'exp' claim")
        if expires <= self._now():
            raise InvalidApiKey("token expired: get a new one at POST /token")
        return claims

    def key_of(self, store: Store, token: str) -> ApiKey:
        """The active key behind *token* (its scope as the token says)."""
        claims = self.claims(token)
        key = apikeys.active_key(store, str(claims["sub"]))
        if claims["scope"] != key.scope_claim:
            raise InvalidApiKey("invalid token: its scope is not its key's")
        return key


def acting_as(manager: TenantManager, actor: str) -> TenantManager:
    """A view of *manager* whose writes are audited as *actor* (the key id behind a
    request). It shares the manager's per-thread connections: cheap, one per request."""
    view = copy.copy(manager)
    view.store = _ActingStore(manager.store, actor)
    return view


class _ActingStore(Store):
    """The server's store under another actor; same connections, same database."""

    def __init__(self, base: Store, actor: str) -> None:
        super().__init__(actor=actor)
        self._base = base
        self.dialect = base.dialect
        self.db_path = getattr(base, "db_path", None)

    @property
    def db(self) -> Any:
        """The base store's connection for this thread."""
        return self._base.db

    def close(self) -> None:
        """Close this thread's connection."""
        self._base.close()


@dataclass(frozen=True)
class Caller:
    """An authenticated request: its key, and the manager that acts (and audits) as it."""

    key: ApiKey
    manager: TenantManager

    @property
    def is_admin(self) -> bool:
        """Whether the key reaches every tenant."""
        return self.key.is_admin

    def tenant(self, ref: str) -> TenantConfig:
        """The tenant named in the path. An admin may name any (id, prefix or email); a
        tenant key only its own id: any other answers exactly as an unknown tenant
        does, so ids cannot be probed."""
        if not self.is_admin and ref != self.key.tenant_id:
            raise NotFound(f"no tenant with id or email {ref!r}")
        return self.manager.resolve(ref)
