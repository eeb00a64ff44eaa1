"""The API and the CLI changing the same tenant at the same time lose nothing: each
update merges into what is stored under the write lock, whoever wrote last."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from api_support import World, token_for
from processes import cli

CLI_ROUNDS = 5


@pytest.mark.slow
def test_api_and_cli_updates_of_one_tenant_at_once_lose_nothing(api, world: World,
                                                                db_path: Path) -> None:
    tid = world.john.tenant_id
    headers = token_for(api, world.john_key)
    api.patch(f"/admin/tenants/{tid}", headers={"api-key": world.admin.api_key},
              json={"rate_limits": {"api_calls_per_minute": 100_000}})
    start = threading.Barrier(2)
    cli_done = threading.Event()
    api_puts: list[int] = []
    failures: list[str] = []

    def through_the_api() -> None:
        start.wait()
        n = 0
        # Until the CLI is done, so the two overlap whatever the machine's speed.
        while not cli_done.is_set() or n < 3:
            response = api.put(f"/tenants/{tid}", headers=headers, json={
                "daily_loss_limit": str(100 + n),
                "strategy_params": {"momentum": {"stake": str(10 + n)}},
                "capital": str(1000 + n),
            })
            if response.status_code != 200:
                failures.append(response.text)
                return
            api_puts.append(n)
            n += 1

    def through_the_cli() -> None:
        start.wait()
        try:
            for n in range(CLI_ROUNDS):
                result = cli(db_path, "tenants", "update", tid, "--set", f"notes=cli-{n}",
                             "--param", f"momentum.lookback={n + 2}",
                             "--max-daily-trades", str(n + 1))
                if result.returncode != 0:
                    failures.append(result.stderr)
                    return
        finally:
            cli_done.set()

    threads = [threading.Thread(target=through_the_api), threading.Thread(target=through_the_cli)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not failures, failures
    last = api_puts[-1]
    tenant = world.manager.resolve(tid)
    assert tenant.settings["daily_loss_limit"] == str(100 + last)  # the API's last
    assert tenant.settings["notes"] == f"cli-{CLI_ROUNDS - 1}"  # the CLI's last
    params = tenant.strategy_params["momentum"]
    assert str(params["stake"]) == str(10 + last)
    assert int(params["lookback"]) == CLI_ROUNDS + 1
    assert tenant.capital == 1000 + last and tenant.max_daily_trades == CLI_ROUNDS
    # Every update is in the audit log, each under who made it.
    updates = [row for row in world.manager.list_audit(tenant_id=tid, limit=10_000)
               if row["action"] == "tenant.update"]
    by_key = [row for row in updates if row["actor"] == world.john_key.key.key_id]
    assert len(by_key) == len(api_puts)
    assert len(updates) - len(by_key) == CLI_ROUNDS + 1  # and the admin's rate limit
