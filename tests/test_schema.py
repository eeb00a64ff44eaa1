"""The PostgreSQL schema is derived from the SQLite migrations (store/schema_pg.py).

The proof that matters: databases in the field were migrated with the hand-written
PostgreSQL migrations 1 to 9 (tests/released_pg_migrations.py, frozen); the derived
ones must build the very same catalog, and every later migration must apply on top of
a released database exactly as on a fresh one.
"""

from __future__ import annotations

import sqlite3

import psycopg
import pytest
import released_pg_migrations as released

from botpoly_admin.store.schema import MIGRATIONS
from botpoly_admin.store.schema_pg import PG_MIGRATIONS, glob_to_regex, render, to_postgresql

RELEASED = len(released.PG_MIGRATIONS)


# --- the catalog, everything a migration can create --------------------------------

CATALOG = {
    "relations": "SELECT c.relname, c.relkind, c.relpersistence, c.reloptions "
                 "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                 "WHERE n.nspname = 'public' ORDER BY 1",
    "columns": "SELECT c.relname, a.attnum, a.attname, format_type(a.atttypid, a.atttypmod), "
               "a.attnotnull, pg_get_expr(d.adbin, d.adrelid), co.collname, a.attidentity, "
               "a.attgenerated, pg_get_serial_sequence(quote_ident(c.relname), a.attname) "
               "FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
               "JOIN pg_namespace n ON n.oid = c.relnamespace "
               "LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
               "LEFT JOIN pg_collation co ON co.oid = a.attcollation "
               "WHERE n.nspname = 'public' AND c.relkind = 'r' AND a.attnum > 0 "
               "AND NOT a.attisdropped ORDER BY 1, 2",
    "constraints": "SELECT c.relname, k.conname, k.contype, pg_get_constraintdef(k.oid), "
                   "k.condeferrable, k.condeferred, k.convalidated "
                   "FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid "
                   "JOIN pg_namespace n ON n.oid = c.relnamespace "
                   "WHERE n.nspname = 'public' ORDER BY 1, 2",
    "indexes": "SELECT tablename, indexname, indexdef FROM pg_indexes "
               "WHERE schemaname = 'public' ORDER BY 1, 2",
    "sequences": "SELECT sequencename, data_type::text, start_value, min_value, max_value, "
                 "increment_by, cycle, cache_size, last_value FROM pg_sequences "
                 "WHERE schemaname = 'public' ORDER BY 1",
    "triggers": "SELECT c.relname, t.tgname, pg_get_triggerdef(t.oid) FROM pg_trigger t "
                "JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n "
                "ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND NOT t.tgisinternal "
                "ORDER BY 1, 2",
}


def catalog(url: str) -> dict[str, list[tuple]]:
    """What the catalog holds of the public schema, with no oid in it."""
    with psycopg.connect(url) as conn:
        return {part: conn.execute(sql).fetchall() for part, sql in CATALOG.items()}


def apply(url: str, statements_of_each: list[list[str]]) -> None:
    """Apply migrations (each its statements) in one transaction each."""
    with psycopg.connect(url) as conn:
        for statements in statements_of_each:
            with conn.transaction():
                for statement in statements:
                    conn.execute(statement)


@pytest.fixture
def two_databases(postgres_server):
    names = [postgres_server.new_database() for _ in range(2)]
    yield [postgres_server.url(name) for name in names]
    for name in names:
        postgres_server.admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_derived_migrations_build_the_catalog_the_released_ones_built(two_databases):
    in_the_field, fresh = two_databases
    apply(in_the_field, [released.render(m) for m in released.PG_MIGRATIONS])
    apply(fresh, [render(m) for m in PG_MIGRATIONS[:RELEASED]])
    field_catalog = catalog(in_the_field)
    assert field_catalog["columns"] and field_catalog["constraints"]
    assert catalog(fresh) == field_catalog
    # What came after: a released database is upgraded to the fresh one's schema.
    apply(in_the_field, [render(m) for m in PG_MIGRATIONS[RELEASED:]])
    apply(fresh, [render(m) for m in PG_MIGRATIONS[RELEASED:]])
    assert catalog(fresh) == catalog(in_the_field)


def test_the_catalog_sees_a_difference(two_databases):
    """The comparison above can fail: one column's type, one CHECK's text."""
    first, second = two_databases
    apply(first, [["CREATE TABLE t (a BIGINT CHECK (a >= 0), b TEXT COLLATE \"C\")"]])
    apply(second, [["CREATE TABLE t (a INTEGER CHECK (a >= 0), b TEXT COLLATE \"C\")"]])
    assert catalog(first)["columns"] != catalog(second)["columns"]
    apply(first, [["CREATE TABLE u (a BIGINT CHECK (a > 0))"]])
    apply(second, [["CREATE TABLE u (a BIGINT CHECK (a >= 0))"]])
    assert catalog(first)["constraints"] != catalog(second)["constraints"]


def test_every_migration_is_rendered_and_the_application_id_stays_out():
    assert len(PG_MIGRATIONS) == len(MIGRATIONS)
    assert not any("PRAGMA" in m or "AUTOINCREMENT" in m for m in PG_MIGRATIONS)
    assert PG_MIGRATIONS[3] == ""  # PRAGMA application_id: botpoly_schema holds it


# --- the rules --------------------------------------------------------------------


def test_types_columns_and_json_checks_are_translated():
    assert to_postgresql(
        "CREATE TABLE t (\n    id INTEGER PRIMARY KEY AUTOINCREMENT,\n"
        "    n INTEGER NOT NULL DEFAULT 0,\n    x REAL,\n"
        "    doc TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(doc))\n);\n"
        "ALTER TABLE t ADD COLUMN note TEXT") == (
        "CREATE TABLE t (\n    id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,\n"
        "    n BIGINT NOT NULL DEFAULT 0,\n    x DOUBLE PRECISION,\n"
        "    doc TEXT COLLATE \"C\" NOT NULL DEFAULT '{}' CHECK (doc::jsonb IS NOT NULL)\n)"
        ";\nALTER TABLE t ADD COLUMN note TEXT COLLATE \"C\"")


def test_literals_and_comments_are_left_as_they_are():
    script = ("-- INTEGER GLOB PRAGMA json_each(x)\nCREATE TABLE t (\n"
              "    kind TEXT CHECK (kind IN ('INTEGER', 'REAL', 'it''s; json_valid(x)'))\n)")
    assert to_postgresql(script) == script.replace("kind TEXT", "kind TEXT COLLATE \"C\"")


@pytest.mark.parametrize("sql, named", [
    ("CREATE TABLE t (b BLOB)", "'BLOB'"),
    ("PRAGMA foreign_keys = ON", "'PRAGMA'"),
    ("INSERT OR IGNORE INTO t VALUES (1)", "'INSERT OR'"),
    ("UPDATE t SET ts = datetime('now')", "'datetime'"),
    ("SELECT value FROM json_each('[]')", "'json_each'"),
    ("CREATE TABLE t (a TEXT CHECK (a GLOB upper(a)))", "'GLOB'"),
])
def test_sqlite_only_sql_without_a_rule_is_refused_by_migration(sql, named):
    with pytest.raises(ValueError, match=f"migration 12: no PostgreSQL rendering of "
                                         f"SQLite's {named}"):
        to_postgresql(sql, 12)


def test_a_glob_is_a_check_with_the_same_regular_expression():
    assert to_postgresql("CREATE TABLE t (\n    p TEXT CHECK (p GLOB '[0-9]-*'))") == \
        "CREATE TABLE t (\n    p TEXT COLLATE \"C\" CHECK (p ~ '^[0-9]-.*$'))"
    with pytest.raises(ValueError, match="a '\\[' without its '\\]'"):
        glob_to_regex("[0-9")


GLOBS = ["[0-9][0-9][0-9][0-9]-[0-1][0-9]", "a*b?c", "[^a-c]x.y", "[]]+(z)|$", "*.^{1}\\",
         "it's*", "[a\\]"]
SUBJECTS = ["2026-11", "2026-1", "2026-13", "202a-11", "ab.c", "aXYZbQc", "abc", "dx.y",
            "ax.y", "dxzy", "]+(z)|$", "]]+(z)|$", "q.^{1}\\", "q.^{11}\\", "it's here",
            "its", "\\", "a", "]", ""]


def test_a_glob_matches_what_sqlites_matches(pg_url: str):
    lite = sqlite3.connect(":memory:")
    with psycopg.connect(pg_url) as conn:
        for pattern in GLOBS:
            regex = glob_to_regex(pattern)
            for subject in SUBJECTS:
                expected = lite.execute("SELECT ? GLOB ?", (subject, pattern)).fetchone()[0]
                got = conn.execute("SELECT %s COLLATE \"C\" ~ %s",
                                   (subject, regex)).fetchone()[0]
                assert got == bool(expected), (pattern, regex, subject)
