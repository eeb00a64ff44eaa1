"""What a location (``--db``, ``BOTPOLY_DB``, ``db copy --to``) names, and how one is
shown: never with its password.

A location is a SQLite file path, or a PostgreSQL URL: ``postgresql://`` or
``postgres://`` (libpq's), or ``postgresql+psycopg://`` (SQLAlchemy's), the scheme in
any case. Anything else that looks like a URL (``something://``, a scheme's typo such
as ``postgresql:/``) or like libpq's ``host=... password=...`` form is refused with
one line naming the accepted forms: taken for a file path, it would be reported as a
missing file, its password echoed, or a file created under a name holding it.
No psycopg here: a SQLite installation never imports it.
"""

from __future__ import annotations

import re

from botpoly_admin.errors import InvalidInput

# Accepted schemes (lower case) and the one each is handed to psycopg as.
POSTGRES_SCHEMES = {"postgresql": "postgresql", "postgres": "postgres",
                    "postgresql+psycopg": "postgresql"}
ACCEPTED_FORMS = ("a SQLite file path, or a PostgreSQL URL: "
                  "postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE "
                  "(also postgres:// and postgresql+psycopg://)")

# A URL's scheme: two characters at least, so a Windows drive (C:/) stays a path.
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]+):")
# libpq's key=value connection string: one of its keywords, then '='.
_CONNINFO = re.compile(r"(?:^|\s)(?:host|hostaddr|port|dbname|user|password|passfile|"
                       r"service|sslmode|connect_timeout|options)\s*=", re.IGNORECASE)
# A password given as a parameter (a URL's query, libpq's form): quoted or up to the
# next separator.
_PASSWORD_PARAM = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'?|[^&\s]*)",
                             re.IGNORECASE)


def database_url(location: str) -> str | None:
    """The PostgreSQL URL *location* names (its scheme as psycopg takes it), or None
    for a file path; InvalidInput (one line, the password masked) for any other URL
    or a libpq ``key=value`` string."""
    match = _SCHEME.match(location)
    if match is not None:
        scheme = match.group(1).lower()
        rest = location[match.end():]
        if scheme in POSTGRES_SCHEMES and rest.startswith("//"):
            return f"{POSTGRES_SCHEMES[scheme]}:{rest}"
        if rest.startswith("/") or scheme.startswith("postgres"):
            raise InvalidInput(f"not a database location botpoly-admin knows: "
                               f"{redact_url(location)}; give {ACCEPTED_FORMS}")
    if _CONNINFO.search(location):
        raise InvalidInput(f"libpq's key=value form is not taken: "
                           f"{redact_url(location)}; give {ACCEPTED_FORMS}")
    return None


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
