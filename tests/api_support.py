"""What the REST API tests share: two tenants and their keys, a fake clock, a client.

Test modules import the fixtures they use from here (``from api_support import ...``).
The API runs in-process on FastAPI's TestClient, over the test's real SQLite file.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from botpoly_admin import apikeys
from botpoly_admin.api import TenantManager
from botpoly_admin.apikeys import IssuedKey
from botpoly_admin.models import TenantConfig
from botpoly_admin.server.app import create_app
from botpoly_admin.server.service import ServerSettings


class FakeClock:
    """Monotonic seconds (rate limits) and epoch seconds (token expiry), moved by hand."""

    def __init__(self) -> None:
        self.mono = 1_000.0
        self.wall = time.time()

    def monotonic(self) -> float:
        return self.mono

    def time(self) -> float:
        return self.wall

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += seconds


@dataclass
class World:
    """John (pro, active, momentum) and Ann (free, trial), a key each, an admin key."""

    manager: TenantManager
    john: TenantConfig
    ann: TenantConfig
    admin: IssuedKey
    john_key: IssuedKey
    ann_key: IssuedKey


@pytest.fixture
def world(manager: TenantManager) -> World:
    """Two tenants and three keys on the test's database."""
    john = manager.create_tenant("John", "john@example.com", "pro", status="active",
                                 enabled_strategies=["momentum"])
    ann = manager.create_tenant("Ann", "ann@example.com", "free")
    return World(manager, john, ann,
                 apikeys.create_key(manager.store, tenant_id=None, name="ops"),
                 apikeys.create_key(manager.store, tenant_id=john.tenant_id),
                 apikeys.create_key(manager.store, tenant_id=ann.tenant_id))


@pytest.fixture
def clock() -> FakeClock:
    """The clock the API's rate limits and tokens run on."""
    return FakeClock()


def make_client(db_path: Path, clock: FakeClock, **settings: Any) -> TestClient:
    """A client of an API over *db_path*, on *clock*."""
    app = create_app(ServerSettings(db=db_path, clock=clock.monotonic,
                                    wall_clock=clock.time, **settings))
    return TestClient(app, raise_server_exceptions=False)


@pytest.fixture
def api(db_path: Path, world: World, clock: FakeClock) -> Iterator[TestClient]:
    """A client of the API, signup off."""
    with make_client(db_path, clock) as client:
        yield client


def token_for(client: TestClient, key: IssuedKey) -> dict[str, str]:
    """Authorization headers with a fresh token for *key*."""
    response = client.post("/token", headers={"X-API-Key": key.api_key})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}
