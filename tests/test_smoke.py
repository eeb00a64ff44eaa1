"""The CLI starts, and a tenant round-trips through it."""

import json


def test_create_and_show(run_cli):
    result = run_cli("create-tenant", "--name", "John", "--email", "john@example.com",
                     "--tier", "pro")
    assert result.exit_code == 0, result.output
    shown = run_cli("tenants", "show", "JOHN@example.com", "--json")
    assert shown.exit_code == 0
    data = json.loads(shown.output)
    assert data["tier"] == "pro"
    assert data["status"] == "trial"
    assert data["monthly_trades_quota"] == 10000
