"""What a location (``--db``, ``BOTPOLY_DB``, ``db copy --to``) names, and how one is
shown: never with its password.

A location is a SQLite file path, or a PostgreSQL URL: ``postgresql://`` or
``postgres://`` (libpq's), or ``postgresql+psycopg://`` (SQLAlchemy's), the scheme in
any case. Anything else that looks like a URL (``something://``, a scheme's typo such
as ``postgresql:/``) or like libpq's ``host=... password=...`` form is refused with
one line naming the accepted forms: taken for a file path, it would be reported as a
missing file, its password echoed, or a file created under a name holding it. A URL
must name its database (``/DATABASE``, or ``?dbname=``): libpq would quietly take the
user's name for it.
No psycopg here: a SQLite installation never imports it.
"""

from __future__ import annotations

import os
import re
from urllib.parse import unquote, urlsplit

from botpoly_admin.errors import InvalidInput

# Accepted schemes (lower case) and the one each is handed to psycopg as.
POSTGRES_SCHEMES = {"postgresql": "postgresql", "postgres": "postgres",
                    "postgresql+psycopg": "postgresql"}
ACCEPTED_FORMS = ("a SQLite file path, or a PostgreSQL URL: "
                  "postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE "
                  "(also postgres:// and postgresql+psycopg://)")

# A URL's scheme: two characters at least, so a Windows drive (C:/) stays a path.
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]+):")
# libpq's key=value connection string: it begins with one of its keywords and '='
# (a file name with '=' later, 'my user=1.db', stays a path).
_CONNINFO = re.compile(r"\s*(?:host|hostaddr|port|dbname|user|password|passfile|"
                       r"service|sslmode|connect_timeout|options)\s*=", re.IGNORECASE)
# A password given as a parameter (a URL's query, libpq's form): quoted or up to the
# next separator.
_PASSWORD_PARAM = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'?|[^&\s]*)",
                             re.IGNORECASE)


def database_url(location: str) -> str | None:
    """The PostgreSQL URL *location* names (its scheme as psycopg takes it), or None
    for a file path; InvalidInput (one line, the password masked) for any other URL
    or a libpq ``key=value`` string. A URL may come with spaces around it (an env
    file's); a path is taken as typed."""
    stripped = location.strip()
    match = _SCHEME.match(stripped)
    if match is not None:
        scheme = match.group(1).lower()
        rest = stripped[match.end():]
        if scheme in POSTGRES_SCHEMES and rest.startswith("//"):
            url = f"{POSTGRES_SCHEMES[scheme]}:{rest}"
            try:
                urlsplit(url).port  # noqa: B018 - what psycopg would choke on later
            except ValueError as exc:
                raise InvalidInput(f"not a valid PostgreSQL URL: {redact_url(stripped)} "
                                   f"({exc}); give {ACCEPTED_FORMS}") from None
            if database_of(url) is None:
                raise InvalidInput(f"no database named in the URL {redact_url(stripped)} "
                                   f"(.../DBNAME): give {ACCEPTED_FORMS}")
            return url
        if rest.startswith("/") or scheme in POSTGRES_SCHEMES:
            raise InvalidInput(f"not a database location botpoly-admin knows: "
                               f"{redact_url(stripped)}; give {ACCEPTED_FORMS}")
    if _CONNINFO.match(location):
        raise InvalidInput(f"libpq's key=value form is not taken: "
                           f"{redact_url(location)}; give {ACCEPTED_FORMS}")
    return None


def database_of(url: str) -> str | None:
    """The database a PostgreSQL URL names, as libpq reads it: ``?dbname=`` in its
    query (the last one), else its path; None when it names none."""
    parts = urlsplit(url)
    in_query = [unquote(value) for key, _, value in
                (pair.partition("=") for pair in parts.query.split("&"))
                if unquote(key) == "dbname" and value]
    return in_query[-1] if in_query else unquote(parts.path[1:]) or None


def redact_url(location: str) -> str:
    """*location* without its password (``user:***@``, ``password=***``), for
    messages; the rest as typed. Masks also in a malformed URL: everything between
    the user's colon and the last ``@`` (a password may hold ``/`` or ``@``)."""
    text = _PASSWORD_PARAM.sub(r"\g<1>***", location)
    match = _SCHEME.match(text)
    if match is None or "@" not in text:
        return text
    start = match.end()
    while start < len(text) and text[start] == "/":
        start += 1
    at = text.rindex("@")
    user, colon, _ = text[start:at].partition(":")
    if at < start or not colon or "@" in user:  # no password (an @ in the query)
        return text
    return f"{text[:start]}{user}:***{text[at:]}"


def scrub(text: str, location: str) -> str:
    """*text* (a driver's message about *location*) with every password *location*
    holds masked, as typed and percent-decoded: libpq quotes a URL's parts in its own
    errors (``invalid percent-encoded token: "..."``)."""
    secrets = [m.group(2).strip("'") for m in _PASSWORD_PARAM.finditer(location)]
    masked = redact_url(location)
    if masked != location:  # the user's password: what redact_url replaced
        start = len(os.path.commonprefix([masked, location]))
        end = len(location) - len(os.path.commonprefix([masked[::-1], location[::-1]]))
        secrets.append(location[start:max(start, end)])
    for secret in sorted({s for s in secrets for s in (s, unquote(s)) if s}, key=len,
                         reverse=True):
        text = text.replace(secret, "***")
    return text
