"""Service endpoints: tokens, health, Prometheus."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from botpoly_admin import apikeys, bots
from botpoly_admin.apikeys import InvalidApiKey
from botpoly_admin.server.responses import ApiJSONResponse
from botpoly_admin.server.service import PresentedKey, ServiceDep
from botpoly_admin.store import MIGRATIONS, schema_version

log = logging.getLogger(__name__)

router = APIRouter(tags=["service"])


@router.post("/token", response_model=None)
def token(key_text: PresentedKey, svc: ServiceDep) -> dict[str, Any]:
    """Exchange an API key (``X-API-Key`` header) for a JWT good for 15 minutes:
    ``{"access_token", "token_type", "expires_in"}``. Counts as one API call."""
    if key_text is None:
        raise InvalidApiKey("no API key: send it in the X-API-Key header")
    key = apikeys.authenticate(svc.manager.store, key_text, touch=True)
    svc.limits.take(key)
    return svc.tokens.issue(key)


@router.get("/healthz", response_model=None)
def healthz(svc: ServiceDep) -> ApiJSONResponse:
    """Without auth: the database answers, its migrations are current, and orchestrator
    heartbeats are fresh (at least one live orchestrator while any bot is set to run).
    200 when all three hold, 503 otherwise."""
    db: dict[str, Any] = {"ok": False}
    migrations: dict[str, Any] = {"ok": False, "expected": len(MIGRATIONS)}
    orchestrators: dict[str, Any] = {"ok": False}
    try:
        conn = svc.manager.db
        conn.execute("SELECT 1").fetchone()
        db["ok"] = True
        migrations["version"] = schema_version(conn)
        migrations["ok"] = migrations["version"] == len(MIGRATIONS)
        live = bots.live_orchestrators(svc.manager.store)
        wanted = conn.execute(
            "SELECT count(*) FROM bots WHERE desired_state = 'running'").fetchone()[0]
        orchestrators.update(ok=bool(live) or wanted == 0, fresh=len(live),
                             bots_set_to_run=wanted,
                             last_heartbeat_at=live[0]["heartbeat_at"] if live else None)
    except Exception as exc:  # noqa: BLE001 - health reports any failure, it never raises
        log.warning("health check failed: %s", exc)
        db.setdefault("error", " ".join(str(exc).split()))
    healthy = db["ok"] and migrations["ok"] and orchestrators["ok"]
    return ApiJSONResponse({"status": "ok" if healthy else "fail", "database": db,
                            "migrations": migrations, "orchestrators": orchestrators},
                           status_code=200 if healthy else 503)


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    """Prometheus text exposition (read from the database at scrape time)."""
    return Response(generate_latest(request.app.state.metrics.registry),
                    media_type=CONTENT_TYPE_LATEST)
