"""The FastAPI application: the service, its routers, middleware and error handlers.

Endpoints are plain ``def`` functions: FastAPI runs them on its thread pool, and each
thread has its own SQLite connection (the store's rule).
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from botpoly_admin import __version__
from botpoly_admin.server import admin_routes, service_routes, tenant_routes
from botpoly_admin.server.metrics import ApiMetrics, RequestMetrics
from botpoly_admin.server.responses import ApiJSONResponse, install_error_handlers
from botpoly_admin.server.service import ServerSettings, Service

__all__ = ["ServerSettings", "create_app"]


def create_app(settings: ServerSettings) -> FastAPI:
    """The API over the database of *settings* (which must exist)."""
    app = FastAPI(
        title="botpoly-admin",
        version=__version__,
        description="Tenants, bots, quotas and billing of a botpoly-admin service.",
        default_response_class=ApiJSONResponse,
    )
    app.state.service = Service(settings)
    app.state.metrics = ApiMetrics(app.state.service.manager,
                                   tenant_labels=settings.metrics_tenant_labels)
    install_error_handlers(app)
    app.include_router(service_routes.router)
    app.include_router(tenant_routes.router)
    app.include_router(admin_routes.router)
    if settings.cors_origins:  # off by default
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins),
                           allow_methods=["*"], allow_headers=["*"])
    app.add_middleware(RequestMetrics, metrics=app.state.metrics)
    return app
