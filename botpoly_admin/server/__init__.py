"""The REST API (``botpoly-admin serve``): FastAPI over the same library the CLI calls.

Needs the ``api`` extra (``pip install 'botpoly-admin[api]'``): FastAPI, uvicorn,
PyJWT and prometheus-client. Nothing in the library imports this package.

- ``app``: ``create_app(ServerSettings)``, error envelopes, the JSON response class;
- ``auth``: API keys in, JWTs out, who is calling (``Caller``) and what it may reach;
- ``limits``: per-plan rate limits (the bots' ``TenantRateLimiter``, metered into
  ``usage.api_calls``), admin and signup limits;
- ``schemas``: the request bodies (pydantic);
- ``tenant_routes``, ``admin_routes``, ``service_routes``: the endpoints;
- ``metrics``: Prometheus, read from the database at scrape time, and the
  per-process figures of ``run --metrics-port``.

See docs/architecture.md, "The REST API".
"""
