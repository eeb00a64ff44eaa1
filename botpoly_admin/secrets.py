"""Encryption of tenant credentials: keys, key files, verification and masking.

Keys are Fernet keys. They come from ``BOTPOLY_SECRET_KEYS`` (comma-separated, the
first is primary) or from a key file next to the database (one key per line, first
is primary, mode 0600). A MultiFernet decrypts with any key and encrypts with the
primary, which is what makes rotation possible.

A verification token in the ``meta`` table, encrypted under the keys in use, lets a
wrong key fail with a clear message before any credential is touched.

Second line of defence (DESIGN invariant 6): every plaintext that passes through
``KeyRing.encrypt`` or ``KeyRing.decrypt`` is remembered in a bounded, process-wide
set, and ``SecretRedactor``, a ``logging.Filter`` installed on every handler the CLI
creates, replaces any of them in a log record (message, arguments, traceback) with
its mask. The first line is that no code logs or prints a secret at all.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from botpoly_admin.errors import Conflict, CredentialsError

if TYPE_CHECKING:
    from cryptography.fernet import MultiFernet

ENV_KEYS = "BOTPOLY_SECRET_KEYS"
ENV_KEY_FILE = "BOTPOLY_KEY_FILE"
CHECK_PLAINTEXT = b"botpoly-admin key check v1"
# Secrets remembered for redaction: enough for every credential of thousands of
# tenants; the oldest are forgotten beyond it (memory stays bounded).
MAX_REMEMBERED = 20_000
# Shorter values are not redacted: replacing a few common characters everywhere
# would mangle every log line, and a secret that short protects nothing anyway.
MIN_REDACTED_LEN = 8


def key_file_for(db_path: Path) -> Path:
    """The key file beside a database: ``BOTPOLY_KEY_FILE``, else ``<db stem>.key``."""
    env = os.environ.get(ENV_KEY_FILE)
    return Path(env) if env else db_path.with_suffix(".key")


def key_id(key: bytes) -> str:
    """A short public fingerprint of a key (never the key itself)."""
    return hashlib.sha256(key.strip()).hexdigest()[:12]


def mask(value: str | None) -> str | None:
    """Mask a secret for display: ``****`` plus the last 4 characters of long values."""
    if value is None:
        return None
    # A short secret's last four characters would be most of it.
    return "****" + value[-4:] if len(value) >= 12 else "****"


def key_source_stamp(db_path: Path) -> tuple[object, ...]:
    """What identifies the keys in use for *db_path* without reading them: the
    environment's value (hashed) or the key file's identity (inode, size, mtime).

    A cached KeyRing is stale once this changes (a key file swapped or rotated by
    another process).
    """
    env = os.environ.get(ENV_KEYS, "").strip()
    if env:
        return ("env", hashlib.sha256(env.encode()).hexdigest())
    path = key_file_for(db_path)
    try:
        info = path.stat()
    except OSError:
        return ("file", str(path))
    return ("file", str(path), info.st_ino, info.st_size, info.st_mtime_ns)


def generate_key() -> bytes:
    """Return a new random Fernet key."""
    from cryptography.fernet import Fernet

    return Fernet.generate_key()


@dataclass
class KeyRing:
    """The keys in use, primary first, and where they came from."""

    keys: list[bytes]
    source: str  # "env" or "file"
    path: Path | None = None

    @property
    def primary_id(self) -> str:
        """Fingerprint of the primary (encrypting) key."""
        return key_id(self.keys[0])

    @property
    def key_ids(self) -> list[str]:
        """Fingerprints of every key, primary first."""
        return [key_id(k) for k in self.keys]

    def fernet(self) -> MultiFernet:
        """A MultiFernet over the keys (primary first)."""
        from cryptography.fernet import Fernet, MultiFernet

        try:
            return MultiFernet([Fernet(k) for k in self.keys])
        except ValueError:
            where = ENV_KEYS if self.source == "env" else str(self.path)
            raise CredentialsError(
                f"malformed secret key in {where} (expected url-safe base64 Fernet keys)"
            ) from None

    def encrypt(self, plaintext: str) -> str:
        """Encrypt under the primary key; returns a token as text."""
        remember(plaintext)
        return self.fernet().encrypt(plaintext.encode()).decode()

    def decrypt(self, token: str) -> str:
        """Decrypt with any key of the ring, or raise CredentialsError."""
        from cryptography.fernet import InvalidToken

        try:
            plaintext = self.fernet().decrypt(token.encode()).decode()
        except InvalidToken:
            raise CredentialsError(
                "cannot decrypt a stored secret with the configured keys"
            ) from None
        remember(plaintext)
        return plaintext

    def token_key_id(self, token: str) -> str | None:
        """Fingerprint of the key that decrypts *token* (None if none does)."""
        from cryptography.fernet import Fernet, InvalidToken

        for key in self.keys:
            try:
                Fernet(key).decrypt(token.encode())
            except InvalidToken:
                continue
            return key_id(key)
        return None


def read_key_file(path: Path) -> list[bytes]:
    """Read keys from *path*, refusing a file readable by group or others (as ssh does)."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise CredentialsError(f"key file not found: {path}") from None
    if not stat.S_ISREG(mode):
        raise CredentialsError(f"key file {path} is not a regular file")
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise CredentialsError(
            f"key file {path} is accessible by group or others "
            f"(mode {stat.S_IMODE(mode):04o}); run: chmod 600 {path}"
        )
    try:
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not a text file of keys"
        raise CredentialsError(f"cannot read key file {path}: {reason}") from None
    keys = [line.strip().encode() for line in text.splitlines() if line.strip()]
    if not keys:
        raise CredentialsError(f"key file {path} holds no key")
    return keys


def write_key_file(path: Path, keys: list[bytes], *, replace: bool = False) -> None:
    """Write *keys* (primary first) to *path* with mode 0600, atomically."""
    if path.exists() and not replace:
        raise Conflict(f"key file already exists: {path} (use `keys rotate` to replace its key)")
    if not path.parent.is_dir():
        raise CredentialsError(f"key file directory does not exist: {path.parent}")
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(b"\n".join(keys) + b"\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def _well_formed(ring: KeyRing) -> KeyRing:
    """*ring*, once every key parses: a malformed key is reported as such here, not
    later as a key that "does not match this database"."""
    ring.fernet()
    return ring


def load_keyring(
    db_path: Path,
    *,
    create: bool,
    notify: Callable[[str], None] | None = None,
) -> KeyRing | None:
    """Find the keys for *db_path*: the environment first, then the key file.

    With *create* and no key anywhere, a key file is generated (mode 0600) and
    *notify* is told where. Without *create*, None means "no key configured".
    """
    env = os.environ.get(ENV_KEYS, "").strip()
    if env:
        keys = [k.strip().encode() for k in env.split(",") if k.strip()]
        return _well_formed(KeyRing(keys, "env"))
    path = key_file_for(db_path)
    if path.exists():
        return _well_formed(KeyRing(read_key_file(path), "file", path))
    if not create:
        return None
    write_key_file(path, [generate_key()])
    if notify:
        notify(f"created a new secret key file {path} (mode 0600): back it up with the database")
    return KeyRing(read_key_file(path), "file", path)


# --- redaction: the second line of defence ------------------------------------------------


class _Remembered:
    """The plaintexts to redact, bounded (least recently seen forgotten first) and
    thread-safe.

    Indexed by their first ``MIN_REDACTED_LEN`` characters, so scanning a text costs
    one dictionary lookup per position however many secrets there are (a log line
    with no secret, the usual case, is one pass over it).
    """

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._lock = threading.Lock()
        self._values: OrderedDict[str, None] = OrderedDict()
        self._index: dict[str, set[str]] = {}  # first characters → values

    def add(self, value: str) -> None:
        if len(value) < MIN_REDACTED_LEN or value == CHECK_PLAINTEXT.decode():
            return
        with self._lock:
            if value in self._values:
                self._values.move_to_end(value)
                return
            self._values[value] = None
            self._index.setdefault(value[:MIN_REDACTED_LEN], set()).add(value)
            while len(self._values) > self._limit:
                old, _ = self._values.popitem(last=False)
                bucket = self._index[old[:MIN_REDACTED_LEN]]
                bucket.discard(old)
                if not bucket:
                    del self._index[old[:MIN_REDACTED_LEN]]

    def clear(self) -> None:
        with self._lock:
            self._values.clear()
            self._index.clear()

    def __len__(self) -> int:
        return len(self._values)

    def _longest_at(self, bucket: set[str], text: str, i: int) -> str | None:
        with self._lock:  # the bucket may change under a concurrent add
            return max((v for v in bucket if text.startswith(v, i)), key=len, default=None)

    def redact(self, text: str) -> str:
        index = self._index
        if not index or len(text) < MIN_REDACTED_LEN:
            return text
        pieces: list[str] = []
        start = i = 0
        last = len(text) - MIN_REDACTED_LEN
        while i <= last:
            # A lone dict lookup needs no lock; a hit (rare) checks under it.
            bucket = index.get(text[i:i + MIN_REDACTED_LEN])
            found = self._longest_at(bucket, text, i) if bucket else None
            if found is None:
                i += 1
                continue
            pieces.append(text[start:i])
            pieces.append(mask(found) or "****")
            i = start = i + len(found)
        if not pieces:
            return text
        pieces.append(text[start:])
        return "".join(pieces)


_REMEMBERED = _Remembered(MAX_REMEMBERED)


def remember(plaintext: str) -> None:
    """Add a secret to the values ``redact`` masks (done by KeyRing.encrypt/decrypt).

    A hex key is remembered with and without its ``0x`` prefix, since either form
    could be printed.
    """
    _REMEMBERED.add(plaintext)
    if plaintext[:2] in ("0x", "0X"):
        _REMEMBERED.add(plaintext[2:])


def forget_all() -> None:
    """Forget every remembered secret (for tests, and a process done with secrets)."""
    _REMEMBERED.clear()


def redact(text: str) -> str:
    """*text* with every remembered secret replaced by its mask."""
    return _REMEMBERED.redact(text)


class SecretRedactor(logging.Filter):
    """A handler filter masking remembered secrets in every record it lets through.

    The record is formatted here (``msg % args``, the traceback, the stack) and the
    redacted text replaces it, so every formatter after this one sees only masks. It
    never drops a record.
    """

    _formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact *record* in place; always True."""
        if not len(_REMEMBERED):
            return True
        message = record.getMessage()
        record.msg, record.args = redact(message), ()
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True
