"""What an operator reads when PostgreSQL refuses: a role without a privilege it needs
(PostgreSQL 15's default: no CREATE on schema public), and a write that waited the
lock timeout for another session's lock. One line each that says what happened and
what to do; nothing changed."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from factories import invoke

from botpoly_admin.store import postgres
from botpoly_admin.store.schema import APPLICATION_ID

pytestmark = pytest.mark.slow


@pytest.fixture
def weak_role(postgres_server, pg_url: str):
    """A login role that may connect to *pg_url*'s database but not create in its
    schema public; yields its URL."""
    role, password = f"weak_{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    database = pg_url.rsplit("/", 1)[1]
    postgres_server.admin(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")  # as PostgreSQL 15
    yield role, (f"postgresql://{role}:{password}@{postgres_server.host}:"
                 f"{postgres_server.port}/{database}")
    postgres_server.admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    postgres_server.admin(f"DROP ROLE {role}")


def test_a_role_without_create_on_schema_public_is_told_what_to_grant(weak_role) -> None:
    role, url = weak_role
    result = invoke(url, "db", "migrate")
    assert result.exit_code == 1, result.output
    assert result.output.count("\n") == 1
    assert result.output.startswith("Error: PostgreSQL refused: permission denied for schema "
                                    f"public: the role {role} may not create there")
    assert f"`GRANT CREATE ON SCHEMA public TO {role}`" in result.output
    assert "not yet supported" not in result.output
    assert url.split(":")[2].split("@")[0] not in result.output
    with psycopg.connect(url) as conn:  # nothing was made
        assert conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
                            ).fetchone() == (0,)


def test_a_role_without_privileges_on_the_tables_is_told_whose_they_are(
        weak_role, pg_url: str) -> None:
    role, url = weak_role
    assert invoke(pg_url, "db", "migrate").exit_code == 0  # the owner made them
    result = invoke(url, "list-tenants")
    assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
    assert result.output.startswith("Error: PostgreSQL refused: permission denied for table ")
    assert f"the role {role} lacks a privilege" in result.output
    assert f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {role}" in result.output


def test_a_write_that_waited_the_lock_timeout_says_what_it_means(
        pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert invoke(pg_url, "db", "migrate").exit_code == 0
    monkeypatch.setattr(postgres, "LOCK_TIMEOUT_S", 0.2)
    with psycopg.connect(pg_url, autocommit=True) as holder:
        # Another session holds the write lock (a run stopped inside a transaction).
        holder.execute("SELECT pg_advisory_lock(%s)", (APPLICATION_ID,))
        result = invoke(pg_url, "create-tenant", "--name", "Ann", "--email",
                        "ann@example.com")
    assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
    assert result.output.startswith("Error: database error: canceling statement due to "
                                    "lock timeout: another session held a lock")
    assert "for over 0.2 s" in result.output and "after 60 s" in result.output
    assert result.output.rstrip().endswith("nothing was changed, try again")
    assert "ann@example.com" not in invoke(pg_url, "list-tenants").output
