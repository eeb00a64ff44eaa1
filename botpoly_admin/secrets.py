"""Encryption of tenant credentials: keys, key files, verification and masking.

Keys are Fernet keys. They come from ``BOTPOLY_SECRET_KEYS`` (comma-separated, the
first is primary) or from a key file next to the database (one key per line, first
is primary, mode 0600). A MultiFernet decrypts with any key and encrypts with the
primary, which is what makes rotation possible.

A verification token in the ``meta`` table, encrypted under the keys in use, lets a
wrong key fail with a clear message before any credential is touched.

Retired keys: ``keys rotate`` with a key file moves the keys it replaces into an
archive beside it (``<key file>.retired``, mode 0600). Archived keys only decrypt,
never encrypt, so a backup taken before a rotation still decrypts after ``db
restore``. Only what needs a plaintext needs a key at all: a masked view of a
credential that does not decrypt says so (``UNDECRYPTABLE``) instead of failing.

Second line of defence (docs/architecture.md invariant 6): every plaintext that passes through
``KeyRing.encrypt`` or ``KeyRing.decrypt`` is remembered in a bounded, process-wide
set, and ``SecretRedactor``, a ``logging.Filter`` installed on every handler the CLI
creates, replaces any of them in a log record (message, arguments, traceback) with
its mask. The first line is that no code logs or prints a secret at all.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import re
import stat
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
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
# What a masked view shows for a stored credential the current keys cannot decrypt.
UNDECRYPTABLE = "set (cannot decrypt with the current keys)"
ARCHIVE_SUFFIX = ".retired"
# The longest credential accepted (a PEM key is a few KiB; nothing real comes near).
MAX_SECRET_BYTES = 64 * 1024
_UUID = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")
_HEX_KEY = re.compile(r"(?:0x)?[0-9a-fA-F]{64}")
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+={0,2}")
_TOKEN = re.compile(r"[\x21-\x7e]+")  # printable ASCII, no space: it goes in HTTP headers
_BINANCE = re.compile(r"[A-Za-z0-9]{64}")


def key_file_for(db_path: Path) -> Path:
    """The key file beside a database: ``BOTPOLY_KEY_FILE``, else ``<db stem>.key``."""
    env = os.environ.get(ENV_KEY_FILE)
    return Path(env) if env else db_path.with_suffix(".key")


def archive_file_for(key_file: Path) -> Path:
    """The archive of retired keys beside *key_file*: ``<key file>.retired``."""
    return key_file.with_name(key_file.name + ARCHIVE_SUFFIX)


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


def credential_problem(name: str, value: str) -> str | None:
    """Why *value* cannot be the credential *name*, or None when its shape is right.

    The one place for the shapes of credentials: checked when a credential is set
    (``tenants credentials set``) and again before a live bot uses them
    (``trading.live``). The answer never contains the value. The Polymarket shapes
    are what the SDK does with them: ``eth_account`` takes the private key, the CLOB
    expects a UUID API key, and ``polymarket/_internal/hmac.py`` base64url-decodes the
    secret; the passphrase goes in an HTTP header as it is.
    """
    if "\x00" in value:
        return "contains a NUL byte"
    if len(value.encode("utf-8", "surrogatepass")) > MAX_SECRET_BYTES:
        return f"is longer than {MAX_SECRET_BYTES // 1024} KiB"
    if name == "polymarket_private_key":
        if not _HEX_KEY.fullmatch(value):
            return ("is not a valid private key (32 bytes as 64 hex characters, with or "
                    "without 0x)")
        from eth_account import Account

        try:
            Account.from_key(value)
        except Exception:  # noqa: BLE001 - eth_keys raises several types; none may echo it
            return "is not a valid private key (out of the secp256k1 range)"
    elif name == "polymarket_wallet":
        from eth_utils import is_checksum_address, is_hex_address

        digits = value[2:]
        # Mixed case is a checksum (EIP-55): a typo in it must not pass.
        one_case = digits in (digits.lower(), digits.upper())
        if not (value.startswith(("0x", "0X")) and is_hex_address(value)
                and (one_case or is_checksum_address(value))):
            return "is not an EVM address (0x and 40 hex characters, checksum respected)"
    elif name == "polymarket_api_key":
        if not _UUID.fullmatch(value):
            return "is not a Polymarket API key (a UUID, as the CLOB issues them)"
    elif name == "polymarket_api_secret":
        try:
            decodable = bool(_BASE64URL.fullmatch(value)) and bool(
                base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
        except (binascii.Error, ValueError):
            decodable = False
        if not decodable:
            return "is not base64 (the url-safe alphabet the CLOB issues)"
    elif name == "polymarket_api_passphrase":
        if not _TOKEN.fullmatch(value):
            return "is not a Polymarket API passphrase (printable characters, no spaces)"
    elif name in ("binance_api_key", "binance_secret") and not _BINANCE.fullmatch(value):
        return "is not a Binance API key or secret (64 letters and digits)"
    return None


def generate_key() -> bytes:
    """Return a new random Fernet key."""
    from cryptography.fernet import Fernet

    return Fernet.generate_key()


@dataclass
class KeyRing:
    """The keys in use, primary first, and where they came from.

    *retired* are the archived keys of a key file: they decrypt, never encrypt.
    """

    keys: list[bytes]
    source: str  # "env" or "file"
    path: Path | None = None
    retired: list[bytes] = field(default_factory=list)

    @property
    def primary_id(self) -> str:
        """Fingerprint of the primary (encrypting) key."""
        return key_id(self.keys[0])

    @property
    def key_ids(self) -> list[str]:
        """Fingerprints of the current keys, primary first."""
        return [key_id(k) for k in self.keys]

    @property
    def retired_ids(self) -> list[str]:
        """Fingerprints of the archived (decrypt-only) keys."""
        return [key_id(k) for k in self.retired]

    def _all_keys(self) -> list[bytes]:
        current = set(self.keys)
        return [*self.keys, *(k for k in dict.fromkeys(self.retired) if k not in current)]

    def fernet(self) -> MultiFernet:
        """A MultiFernet encrypting with the primary key, decrypting with any key,
        retired ones included."""
        from cryptography.fernet import Fernet, MultiFernet

        try:
            return MultiFernet([Fernet(k) for k in self._all_keys()])
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

        for key in self._all_keys():
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
    """Write *keys* (primary first) to *path* with mode 0600, atomically.

    Without *replace*, a file that exists, or that another process makes meanwhile
    (two first starts at once), is never overwritten: Conflict.
    """
    exists = Conflict(f"key file already exists: {path} (use `keys rotate` to replace its key)")
    if path.exists() and not replace:
        raise exists
    if not path.parent.is_dir():
        raise CredentialsError(f"key file directory does not exist: {path.parent}")
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(b"\n".join(keys) + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o600)
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # fails if the file appeared meanwhile: never replaced
    except FileExistsError:
        raise exists from None
    finally:
        tmp.unlink(missing_ok=True)


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
        return _well_formed(KeyRing(read_key_file(path), "file", path, read_archive(path)))
    if not create:
        return None
    try:
        write_key_file(path, [generate_key()])
    except Conflict:
        pass  # another process made it first: use theirs
    else:
        if notify:
            notify(f"created a new secret key file {path} (mode 0600): back it up with the "
                   "database")
    return KeyRing(read_key_file(path), "file", path, read_archive(path))


def read_archive(key_file: Path) -> list[bytes]:
    """The retired keys archived beside *key_file* (none if there is no archive)."""
    archive = archive_file_for(key_file)
    if not archive.exists() and not archive.is_symlink():
        return []
    return read_key_file(archive)


def archive_keys(key_file: Path, keys: list[bytes]) -> Path:
    """Add *keys* to the archive beside *key_file* (0600, atomically); return its path.

    Keys already archived are not repeated; the newest retired keys come first.
    """
    archive = archive_file_for(key_file)
    kept = list(dict.fromkeys([*keys, *read_archive(key_file)]))
    write_key_file(archive, kept, replace=True)
    return archive


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
