"""One running bot's state machine (``runtime.runner.Runner``) and a run's settings.

Every change the database must see moves the runner's version by one; the control
thread writes a runner whose version moved since its last sync.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from botpoly_admin.errors import InvalidInput
from botpoly_admin.runtime import RunSettings
from botpoly_admin.runtime.runner import MAX_ERROR_CHARS, Runner, short_error
from botpoly_admin.trading.dispatch import CycleReport

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
ROW = {"name": "Ann", "tier": "pro", "trading_mode": "live"}


def runner(**kw) -> Runner:
    return Runner("t-1", ROW, {"cycles": 7, "restarts": 2}, paper=kw.pop("paper", False),
                  wall=T0)


def test_a_new_runner_carries_its_stored_counters_and_its_mode() -> None:
    r = runner()
    assert (r.state, r.cycles, r.restarts, r.version) == ("running", 7, 2, 0)
    assert r.live and r.mode == "live"
    paper = runner(paper=True)  # a paper run: every bot trades paper
    assert not paper.live and paper.mode == "paper"


def test_every_transition_moves_the_version_once_and_stamps_the_heartbeat() -> None:
    r = runner()
    later = T0 + timedelta(seconds=5)
    assert r.cycled(CycleReport(duration_ms=3.0), 4.0, later) is None  # still running
    assert (r.version, r.cycles, r.last_cycle_ms) == (1, 8, 3.0)
    assert r.heartbeat_at == "2026-12-01T12:00:05Z"
    assert r.cycled(CycleReport(state="paused_quota"), 4.0, later) == "running"
    assert (r.state, r.version, r.last_cycle_ms) == ("paused_quota", 2, 4.0)
    r.skipped(later + timedelta(seconds=1))
    assert (r.state, r.version, r.heartbeat_at) == ("paused_quota", 3,
                                                    "2026-12-01T12:00:06Z")
    assert r.cycled(CycleReport(state="bogus"), 1.0, later) == "paused_quota"
    assert r.state == "running"  # a state a cycle may not report counts as running


def test_failures_count_in_a_row_and_a_good_cycle_resets_them() -> None:
    r = runner()
    r.failed("RuntimeError: boom", T0)
    r.failed("RuntimeError: boom", T0)
    assert (r.state, r.failures, r.restarts, r.last_error, r.version) == (
        "error", 2, 4, "RuntimeError: boom", 2)
    r.cycled(CycleReport(), 1.0, T0)
    assert (r.state, r.failures, r.restarts) == ("running", 0, 4)


def test_a_refusal_is_news_once_and_remembers_the_mark_it_was_refused_under() -> None:
    r = runner()
    r.built_mark = "mark-1"
    assert r.refused("CredentialsError: missing api_key", T0) is True
    assert r.refused("CredentialsError: missing api_key", T0) is False
    assert r.refused("CredentialsError: bad key", T0) is True
    assert (r.state, r.refused_mark, r.version) == ("refused", "mark-1", 3)


def test_a_finished_runner_is_stopped_unless_it_was_refused() -> None:
    r = runner()
    r.finished_now()
    assert (r.state, r.finished, r.version) == ("stopped", True, 1)
    assert r.heartbeat_at == "2026-12-01T12:00:00Z"  # its last sign of life, kept
    refused = runner()
    refused.refused("LiveRefused: not the exchange's data", T0)
    refused.finished_now()
    assert refused.state == "refused"  # it keeps saying why
    progress = refused.progress()
    assert (progress.state, progress.last_error) == ("refused",
                                                     "LiveRefused: not the exchange's data")


def test_short_error_is_one_bounded_line() -> None:
    assert short_error(ValueError("two\nlines  here")) == "ValueError: two lines here"
    assert short_error(RuntimeError()) == "RuntimeError: (no message)"
    assert len(short_error(RuntimeError("x" * 10_000))) == MAX_ERROR_CHARS


def test_settings_resolve_their_defaults_and_the_backoff_doubles_to_its_cap() -> None:
    settings = RunSettings.check(interval_s=5, backoff_base_s=1, backoff_max_s=6)
    assert settings.lease_ttl_s == 15  # three intervals, when longer than 10 s
    assert settings.stuck_after_s == 25  # five intervals, when longer than 10 s
    assert [settings.backoff_s(n) for n in range(1, 6)] == [1, 2, 4, 6, 6]


@pytest.mark.parametrize("kw, message", [
    ({"interval_s": 0}, "interval"),
    ({"max_workers": True}, "max workers"),
    ({"live_workers": 0}, "live workers"),
    ({"paper": True, "live_workers": 2}, "paper run"),
    ({"interval_s": 1, "lease_ttl_s": 2}, "lease TTL"),
    ({"backoff_base_s": 2, "backoff_max_s": 1}, "backoff"),
    ({"foreground": True, "tenant_ids": ["a", "b"]}, "exactly one tenant"),
])
def test_settings_a_run_could_not_honour_are_refused(kw, message) -> None:
    with pytest.raises(InvalidInput, match=message):
        RunSettings.check(**kw)
