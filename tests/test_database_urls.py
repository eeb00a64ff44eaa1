"""The locations ``--db``, ``BOTPOLY_DB`` and ``db copy --to`` take: a file path, or a
PostgreSQL URL in any of its spellings; anything else that looks like a URL (or
libpq's key=value form) is one error line, its password masked, and nothing is made
on disk. A location is never shown with its password."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from factories import invoke

from botpoly_admin.errors import InvalidInput
from botpoly_admin.store import resolve_location
from botpoly_admin.store.locations import database_url, redact_url

PASSWORD = "hunter2-s3cret"
REFUSED = [
    f"postgresq://bp:{PASSWORD}@db.internal/botpoly",      # a typo of the scheme
    f"postgresql:/bp:{PASSWORD}@db.internal/botpoly",      # one slash
    f"mysql://bp:{PASSWORD}@db.internal/botpoly",
    f"redis://:{PASSWORD}@cache.internal:6379/0",
    f"host=db.internal user=bp password={PASSWORD} dbname=botpoly",
    f"dbname=botpoly password='{PASSWORD} x'",
]
COMMANDS = [("list-tenants",), ("db", "migrate"), ("db", "path"), ("dashboard",),
            ("create-tenant", "--name", "Ann", "--email", "ann@example.com")]


@pytest.mark.parametrize("location", REFUSED)
@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
@pytest.mark.parametrize("through", ["--db", "BOTPOLY_DB"])
def test_an_unknown_location_is_one_line_without_its_password_and_makes_nothing(
        location: str, command: tuple[str, ...], through: str, tmp_path: Path) -> None:
    if through == "--db":
        result = invoke(location, *command)
    else:
        result = invoke(None, *command, env={"BOTPOLY_DB": location})
    assert result.exit_code == 2, result.output
    assert result.output.startswith("Error: ") and result.output.count("\n") == 1
    assert "postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE" in result.output
    assert PASSWORD not in result.output and "***" in result.output
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("spelling", ["POSTGRESQL://", "PostgreSQL://", "postgres://",
                                      "postgresql+psycopg://", "POSTGRESQL+PSYCOPG://"])
def test_every_spelling_of_a_postgresql_url_is_one(spelling: str) -> None:
    typed = f"{spelling}bp:{PASSWORD}@db.internal:5433/botpoly"
    expected = "postgres" if spelling.lower() == "postgres://" else "postgresql"
    assert resolve_location(typed) == f"{expected}://bp:{PASSWORD}@db.internal:5433/botpoly"
    result = invoke(typed, "db", "path", "--json")
    assert json.loads(result.stdout) == {
        "path": f"{expected}://bp:***@db.internal:5433/botpoly", "backend": "postgresql"}


def test_paths_stay_paths() -> None:
    for path in ("data/tenants.db", "/var/lib/botpoly/tenants.db", "C:/botpoly.db",
                 "weird:name.db", "my=file.db"):
        assert database_url(path) is None
        assert resolve_location(path) == Path(path)
    with pytest.raises(InvalidInput):
        database_url("postgresql:bp@db.internal/botpoly")  # no slash: still a typo


def test_a_url_is_shown_without_its_password_and_as_typed() -> None:
    assert redact_url("postgresql:///botpoly") == "postgresql:///botpoly"
    assert redact_url("postgresql://%2Fvar%2Frun/botpoly") == "postgresql://%2Fvar%2Frun/botpoly"
    assert redact_url(f"postgresql://bp:{PASSWORD}@h/db?sslmode=require") == \
        "postgresql://bp:***@h/db?sslmode=require"
    # A password holding / or @ (not percent-encoded, as typed) is masked whole.
    assert redact_url("postgresql://bp:a/b@c@h:5432/db") == "postgresql://bp:***@h:5432/db"
    # An @ in the query is not a password's end.
    assert redact_url("postgresql://bp@h:5432/db?application_name=a@b") == \
        "postgresql://bp@h:5432/db?application_name=a@b"
    assert redact_url(f"postgresql://h/db?user=bp&password={PASSWORD}&sslmode=require") == \
        "postgresql://h/db?user=bp&password=***&sslmode=require"
    assert redact_url(f"host=h sslpassword={PASSWORD} dbname=db") == \
        "host=h sslpassword=*** dbname=db"


def test_db_copy_refuses_an_unknown_target_without_its_password(tmp_path: Path) -> None:
    db = tmp_path / "tenants.db"
    assert invoke(db, "db", "migrate").exit_code == 0
    for target in (f"postgresq://bp:{PASSWORD}@h/db", f"host=h password={PASSWORD}"):
        result = invoke(db, "db", "copy", "--to", target)
        assert result.exit_code == 2, result.output
        assert result.output.startswith("Error: ") and result.output.count("\n") == 1
        assert PASSWORD not in result.output


def test_db_migrate_takes_an_upper_case_and_a_sqlalchemy_url(pg_url: str) -> None:
    scheme, rest = pg_url.split("://", 1)
    for typed in (f"POSTGRESQL://{rest}", f"postgresql+psycopg://{rest}"):
        result = invoke(typed, "db", "migrate")
        assert result.exit_code == 0, result.output
        assert result.output.startswith("Database postgresql://")
        assert pg_url.split(":")[2].split("@")[0] not in result.output


def test_the_help_names_postgresql_for_every_command() -> None:
    top = invoke(None, "--help").output
    assert "not yet" not in top and "all in one SQLite database" not in top
    assert "postgresql://USER@HOST[:PORT]/DB" in top
    assert "botpoly-admin --db postgresql://bp@db.internal/botpoly db migrate" in \
        invoke(None, "db", "migrate", "--help").output
    group = invoke(None, "db", "--help").output
    assert "botpoly-admin --db postgresql://bp@db.internal/botpoly db migrate" in group
    assert "botpoly-admin db copy --to postgresql://bp@db.internal/botpoly" in group


def test_on_postgresql_no_output_file_may_be_the_key_file(tmp_path: Path) -> None:
    """The key file of a PostgreSQL database is data/<database>.key: `markets record
    --out` and `run --log-file` appending to it would make every credential unreadable."""
    (tmp_path / "data").mkdir()
    result = invoke(f"postgresql://bp:{PASSWORD}@127.0.0.1:9/botpoly", "markets", "record",
                    "--out", "data/botpoly.key", "--duration", "1")
    assert result.exit_code == 2, result.output
    assert "--out data/botpoly.key is the database or its key file" in result.output
    assert list((tmp_path / "data").iterdir()) == []


def test_a_password_libpq_quotes_in_its_own_error_is_masked() -> None:
    """A raw % in the password: libpq's parse error quotes it back."""
    result = invoke(f"postgresql://bp:{PASSWORD}%zz@127.0.0.1:1/botpoly", "list-tenants")
    assert result.exit_code != 0 and result.output.startswith("Error: ")
    assert "percent" in result.output and PASSWORD not in result.output


def test_a_url_with_spaces_around_it_is_a_url_and_a_malformed_one_is_one_line(
        tmp_path: Path) -> None:
    typed = f" \tpostgresql://bp:{PASSWORD}@127.0.0.1:1/botpoly "
    assert resolve_location(typed) == f"postgresql://bp:{PASSWORD}@127.0.0.1:1/botpoly"
    result = invoke(None, "db", "path", env={"BOTPOLY_DB": typed})
    assert PASSWORD not in result.output and "bp:***@" in result.output
    result = invoke(f"postgresql://bp:{PASSWORD}@[::1/botpoly", "list-tenants")
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert result.output.startswith("Error: ") and PASSWORD not in result.output


def test_file_names_with_a_colon_or_an_equals_sign_stay_paths() -> None:
    for path in ("my user=1.db", "data/my host=a.db", "postgres-old:1.db"):
        assert database_url(path) is None


@pytest.mark.parametrize(("options", "said"), [
    ("127.0.0.1:notaport/botpoly", "Error: not a valid PostgreSQL URL: "),
    ("127.0.0.1:1/botpoly?sslmode=bogus", "Error: cannot use the PostgreSQL URL "),
    ("127.0.0.1/botpoly?port=notaport", "Error: cannot use the PostgreSQL URL ")])
def test_a_url_option_libpq_refuses_is_refused_at_once(options: str, said: str) -> None:
    """Waiting cannot cure it: one line at once, not after the connect wait."""
    result = invoke(f"postgresql://bp:{PASSWORD}@{options}", "list-tenants")
    assert result.exit_code != 0 and result.output.count("\n") == 1, result.output
    assert result.output.startswith(said), result.output
    assert PASSWORD not in result.output
