"""Stored text can neither forge a log line nor drive the operator's terminal.

Control characters (C0, C1), bidi overrides and isolates and the line separators are
refused in every free-text field at input, through the CLI and the library alike;
every free-text field has a length cap. Text already in the database (rows stored
before the check, or written by another tool) is escaped wherever it is printed or
logged, and rich markup in it is shown as typed.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import sqlite3
from decimal import Decimal
from pathlib import Path

import pytest
from cli_checks import assert_clean_error
from factories import invoke, make_tenant
from rich.console import Console

from botpoly_admin.api import TenantManager
from botpoly_admin.cli.views import build_dashboard, build_live_table
from botpoly_admin.errors import InvalidInput
from botpoly_admin.models import TEXT_LIMITS
from botpoly_admin.reports.dashboard import LiveBot, LiveSnapshot, collect
from botpoly_admin.text import EscapingFilter, check_text, printable

# Each one forges something: a new log line, a terminal title (OSC 0), a cleared
# screen, text shown right to left, a hidden isolate, a C1 "next line", a Unicode
# line separator.
HOSTILE = {
    "newline": "Ann\n2026-12-01T00:00:00Z started   Mallory: lease taken",
    "carriage-return": "Ann\rMallory",
    "escape-title": "Ann\x1b]0;pwned\x07",
    "escape-clear": "Ann\x1b[2J",
    "bidi-override": "Ann \u202egnp.exe",
    "bidi-isolate": "Ann \u2066x\u2069",
    "c1-next-line": "Ann\x85Mallory",
    "line-separator": "Ann\u2028Mallory",
    "nul": "Ann\x00",
}
RAW = ("\n", "\r", "\x1b", "\x07", "\u202e", "\u2066", "\x85", "\u2028", "\x00")
MARKUP = "[bold red]x[/]"

# A legacy row: stored before input was checked (or by another tool).
LEGACY_NAME = "Evil\x1b]0;pwned\x07\nINFO forged line\u202e"


def assert_no_raw_controls(text: str) -> None:
    """Only line breaks between lines, and no other control or bidi character."""
    for line in text.splitlines():
        for char in RAW:
            assert char not in line, (char, line)


@pytest.fixture
def ann(manager: TenantManager) -> None:
    """Ann, an active pro tenant, written and the test's connection closed."""
    make_tenant(manager, "Ann")
    manager.close()


@pytest.fixture
def legacy(db_path: Path, manager: TenantManager):
    """A tenant whose name, and an audit row whose actor and details, hold raw control
    characters, written straight into the database as an older version could have."""
    tenant = manager.create_tenant(name="Placeholder", email="legacy@example.com", tier="pro",
                                   status="active", enabled_strategies=["momentum"])
    manager.close()
    conn = sqlite3.connect(db_path)
    conn.execute("UPDATE tenants SET name = ?, settings = ? WHERE tenant_id = ?",
                 (LEGACY_NAME, json.dumps({"notes": "line1\nline2\x1b[31m"}),
                  tenant.tenant_id))
    conn.execute("INSERT INTO audit_log (ts, actor, action, tenant_id, details) "
                 "VALUES ('2026-12-01T00:00:00Z', ?, 'tenant.update', ?, ?)",
                 ("root\x1b[2J", tenant.tenant_id, json.dumps({"name": LEGACY_NAME})))
    conn.commit()
    conn.close()
    return tenant


# --- refused at input ------------------------------------------------------------------------


@pytest.mark.parametrize("value", HOSTILE.values(), ids=HOSTILE.keys())
@pytest.mark.parametrize("args", [
    pytest.param(["create-tenant", "--email", "new@example.com", "--name"], id="create-name"),
    pytest.param(["tenants", "create", "--email", "new@example.com", "--name"],
                 id="tenants-create-name"),
    pytest.param(["tenants", "update", "ann@example.com", "--name"], id="update-name"),
    pytest.param(["tenants", "update", "ann@example.com", "--set"], id="update-setting"),
    pytest.param(["tenants", "update", "ann@example.com", "--markets"], id="update-markets"),
])
def test_control_characters_are_refused_at_input(ann, db_path, db_snapshot, args,
                                                 value) -> None:
    if args[-1] == "--set":
        value = f"notes={value}"
    before = db_snapshot()
    result = invoke(db_path, *args, value)
    assert_clean_error(result, 2)
    assert "control character" in result.stderr
    assert_no_raw_controls(result.output)  # the error never echoes the value
    assert db_snapshot() == before


@pytest.mark.parametrize("value", HOSTILE.values(), ids=HOSTILE.keys())
def test_control_characters_in_emails_are_refused(ann, db_path, db_snapshot, value) -> None:
    email = value.replace("Ann", "ann") + "@example.com"
    before = db_snapshot()
    for args in (["create-tenant", "--name", "New", "--email", email],
                 ["tenants", "update", "ann@example.com", "--email", email],
                 ["tenants", "update", "ann@example.com", "--set", f"support_email={email}"]):
        result = invoke(db_path, *args)
        assert_clean_error(result, 2)
        assert_no_raw_controls(result.output)
    assert db_snapshot() == before


@pytest.mark.parametrize("value", HOSTILE.values(), ids=HOSTILE.keys())
def test_the_library_refuses_them_too(manager: TenantManager, value) -> None:
    """The guide's API goes through the same check as the CLI."""
    tenant = manager.create_tenant(name="Ann", email="ann@example.com")
    with pytest.raises(InvalidInput, match="control character"):
        manager.create_tenant(name=value, email="other@example.com")
    for field in ("name", "custom_domain", "brand_name", "notes", "primary_color",
                  "custom_logo"):
        with pytest.raises(InvalidInput, match="control character"):
            manager.update_tenant(tenant.tenant_id, **{field: value})
    with pytest.raises(InvalidInput, match="control character"):
        manager.update_tenant(tenant.tenant_id, settings={"notes": value})
    with pytest.raises(InvalidInput, match="control character"):
        manager.create_tenant(name="Bob", email="bob@example.com", settings={"notes": value})
    assert [t.name for t in manager.list_tenants()] == ["Ann"]
    assert manager.resolve(tenant.tenant_id).settings == {}


@pytest.mark.parametrize("field", ["name", "custom_domain", "custom_logo", "brand_name",
                                   "primary_color", "notes"])
def test_every_free_text_field_has_a_length_cap(manager: TenantManager, field) -> None:
    tenant = manager.create_tenant(name="Ann", email="ann@example.com")
    limit = TEXT_LIMITS[field]
    manager.update_tenant(tenant.tenant_id, **{field: "x" * limit})  # at the cap: fine
    with pytest.raises(InvalidInput, match=f"longer than {limit:,} characters"):
        manager.update_tenant(tenant.tenant_id, **{field: "x" * (limit + 1)})


def test_emails_and_market_lists_are_capped(manager: TenantManager) -> None:
    long_email = "a" * 250 + "@example.com"
    with pytest.raises(InvalidInput, match="longer than 254 characters"):
        manager.create_tenant(name="Ann", email=long_email)
    tenant = manager.create_tenant(name="Ann", email="ann@example.com")
    with pytest.raises(InvalidInput, match="at most 100"):
        manager.update_tenant(tenant.tenant_id, markets=[f"m{i}" for i in range(101)])
    with pytest.raises(InvalidInput, match="longer than 200"):
        manager.update_tenant(tenant.tenant_id, markets=["m" * 201])


def test_a_capped_cli_value_is_a_clean_usage_error(ann, db_path, db_snapshot) -> None:
    before = db_snapshot()
    result = invoke(db_path, "tenants", "update", "ann@example.com", "--set",
                    "notes=" + "x" * 2001)
    assert_clean_error(result, 2)
    assert "notes is longer than 2,000 characters" in result.stderr
    assert db_snapshot() == before


def test_ordinary_unicode_and_markup_are_accepted_and_shown_as_typed(db_path) -> None:
    names = ["Zoë Ltd", "株式会社 トレード", "שלום Capital", MARKUP, "Tab-free [/] :smile:"]
    for i, name in enumerate(names):
        result = invoke(db_path, "create-tenant", "--name", name, "--email", f"u{i}@example.com")
        assert result.exit_code == 0, result.output
        assert name in result.stdout
    listed = invoke(db_path, "list-tenants")
    shown = invoke(db_path, "tenants", "show", "u3@example.com")
    audit = invoke(db_path, "audit", "list")
    for result in (listed, shown, audit):
        assert result.exit_code == 0, result.output
    for name in names:
        assert name in listed.stdout
    assert MARKUP in shown.stdout and MARKUP in audit.stdout


def test_check_text_reports_the_code_point_not_the_value() -> None:
    with pytest.raises(InvalidInput) as caught:
        check_text("abc\x1b]0;x\x07", "name", 200)
    assert str(caught.value).startswith("name contains a control character (U+001B at "
                                        "position 4)")
    assert "\x1b" not in str(caught.value)


# --- escaped wherever printed or logged --------------------------------------------------------


def test_legacy_rows_print_escaped_in_list_tenants(legacy, db_path) -> None:
    for args in (["list-tenants"], ["tenants", "list", "--csv"], ["list-tenants", "--json"],
                 ["tenants", "show", "legacy@example.com"],
                 ["tenants", "show", "legacy@example.com", "--json"]):
        result = invoke(db_path, *args)
        assert result.exit_code == 0, (args, result.output)
        assert_no_raw_controls(result.stdout)
        assert "forged line" in result.stdout
        assert not any(line.startswith("INFO forged") for line in result.stdout.splitlines())
    table = invoke(db_path, "list-tenants").stdout
    assert "Evil\\x1b]0;pwned\\x07\\nINFO forged line\\u202e" in table
    # JSON and CSV still carry the exact stored value to a script.
    listed = json.loads(invoke(db_path, "list-tenants", "--json").stdout)
    assert listed[0]["name"] == LEGACY_NAME
    rows = list(csv.DictReader(io.StringIO(invoke(db_path, "list-tenants", "--csv").stdout)))
    assert rows[0]["name"] == printable(LEGACY_NAME)


def test_legacy_rows_print_escaped_in_audit_list(legacy, db_path) -> None:
    for args in (["audit", "list"], ["audit", "list", "--csv"], ["audit", "list", "--json"]):
        result = invoke(db_path, *args)
        assert result.exit_code == 0, result.output
        assert_no_raw_controls(result.stdout)
    assert "root\\x1b[2J" in invoke(db_path, "audit", "list").stdout


def test_legacy_rows_print_escaped_in_the_dashboard(legacy, db_path) -> None:
    result = invoke(db_path, "dashboard")
    assert result.exit_code == 0, result.output
    assert_no_raw_controls(result.stdout)
    assert "Evil\\x1b]0;pwned" in result.stdout
    # Rendered on a real terminal (colours on), the only escapes are rich's own styles.
    manager = TenantManager(db_path, create=False)
    out = io.StringIO()
    Console(file=out, force_terminal=True, width=200).print(build_dashboard(collect(manager.store)))
    manager.close()
    assert "\x1b]0;" not in out.getvalue() and "\u202e" not in out.getvalue()
    assert "\x1b[2J" not in out.getvalue()


def test_the_live_table_escapes_names_and_errors() -> None:
    def bot(name: str, error: str) -> LiveBot:
        return LiveBot(tenant_id="t" * 36, name=name, tier="pro", mode="paper",
                       state="error", cycles=1, last_cycle_ms=1.0, trades_today=0,
                       quota_used=0, quota_limit=None, pnl=Decimal(0), restarts=0,
                       last_error=error)

    bots = (bot("\x1b]0;t\x07\u202eA", "boom\x1b[2J\u202e"), bot(MARKUP, "[red]e[/]"))
    snapshot = LiveSnapshot(owner="vm:1:abc", feed="replay:[bold]x", interval_s=1.0,
                            elapsed_s=1.0, workers=1, queued=0, cycles=1, cycles_per_s=1.0,
                            lag_p50_ms=None, lag_p99_ms=None, upstream_requests=0,
                            by_state={"error": 2}, bots=bots, bots_total=2)
    out = io.StringIO()
    Console(file=out, force_terminal=True, width=300).print(build_live_table(snapshot))
    text = out.getvalue()
    assert "\x1b]0;" not in text and "\u202e" not in text and "\x1b[2J" not in text
    plain = io.StringIO()
    Console(file=plain, width=300).print(build_live_table(snapshot))
    for shown in ("\\x1b]0;t\\x07\\u202eA", "boom\\x1b[2J\\u202e", MARKUP, "[red]e[/]",
                  "replay:[bold]x"):
        assert shown in plain.getvalue()  # escaped, and markup shown as typed


def test_run_prints_and_logs_legacy_names_escaped(legacy, db_path, tmp_path) -> None:
    """`run`'s event lines on stdout and botpoly.log: one line per event, escaped."""
    assert invoke(db_path, "start-bot", "legacy@example.com").exit_code == 0
    log_file = tmp_path / "botpoly.log"
    result = invoke(db_path, "run", "--cycles", "2", "--interval", "0.2", "--log-file",
                    str(log_file))
    assert result.exit_code == 0, result.output
    assert_no_raw_controls(result.stdout)
    assert "Evil\\x1b]0;pwned\\x07\\nINFO forged line" in result.stdout
    log = log_file.read_text(encoding="utf-8")
    assert "Evil\\x1b]0;pwned\\x07\\nINFO forged line" in log
    assert_no_raw_controls(log)
    assert not any(line.startswith("INFO forged") for line in log.splitlines())


def test_the_escaping_filter_keeps_one_record_on_one_line() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(EscapingFilter())
    logger = logging.getLogger("botpoly_admin.test_terminal_safety")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("bot of %s failed", LEGACY_NAME)
        try:
            raise ValueError("bad\x1b[2J")
        except ValueError:
            logger.exception("with a traceback")
    finally:
        logger.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert lines[0] == f"bot of {printable(LEGACY_NAME)} failed"
    assert lines[1] == "with a traceback"
    assert lines[2].startswith("Traceback") and "ValueError: bad\\x1b[2J" in lines[-1]
    assert_no_raw_controls(stream.getvalue())


def test_start_bot_names_a_legacy_tenant_escaped(legacy, db_path) -> None:
    for args in (["start-bot", "legacy@example.com"], ["bots", "stop", "legacy@example.com"],
                 ["bots", "status"]):
        result = invoke(db_path, *args)
        assert result.exit_code == 0, result.output
        assert_no_raw_controls(result.stdout)
        assert "Evil\\x1b]0;pwned" in result.stdout
