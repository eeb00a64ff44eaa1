"""JSON responses and the one error envelope.

Every error is one JSON object ``{"error": "...", "detail": ...}``, like the CLI's
``--json`` error envelope. Library errors map to a status here and only here
(NotFound 404, Conflict 409, InvalidInput 422, a bad key or token 401, a rate limit
429 with ``Retry-After``). Messages are redacted like the CLI's; a request body is
never echoed back (pydantic's ``input`` is left out of 422 details).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from botpoly_admin.apikeys import InvalidApiKey
from botpoly_admin.errors import (
    BotpolyError,
    Conflict,
    CredentialsError,
    ExchangeError,
    InvalidInput,
    NotFound,
    QuotaExceeded,
    StoreError,
)
from botpoly_admin.secrets import redact
from botpoly_admin.server.limits import RateLimited
from botpoly_admin.text import escape_json

log = logging.getLogger(__name__)


class ApiJSONResponse(JSONResponse):
    """JSON with the CLI's escaping: control and bidi characters as ``\\uXXXX``."""

    def render(self, content: Any) -> bytes:
        """Compact JSON, non-ASCII kept, unsafe characters escaped."""
        text = json.dumps(content, ensure_ascii=False, allow_nan=False,
                          separators=(",", ":"))
        return escape_json(text).encode("utf-8")


STATUS_OF: tuple[tuple[type[BotpolyError], int], ...] = (
    (InvalidApiKey, 401),
    (RateLimited, 429),
    (NotFound, 404),
    (InvalidInput, 422),
    (Conflict, 409),
    (QuotaExceeded, 409),
    (CredentialsError, 409),
    (ExchangeError, 502),
    (StoreError, 503),
)


def error_response(status: int, message: str, detail: Any = None,
                   headers: dict[str, str] | None = None) -> ApiJSONResponse:
    """The one error envelope."""
    message = redact(" ".join(message.split()))
    return ApiJSONResponse({"error": message, "detail": message if detail is None else detail},
                           status_code=status, headers=headers)


def _library_error(request: Request, exc: Exception) -> ApiJSONResponse:
    assert isinstance(exc, BotpolyError)
    status = next((code for kind, code in STATUS_OF if isinstance(exc, kind)), 400)
    headers = None
    if isinstance(exc, RateLimited):
        headers = {"Retry-After": str(exc.retry_after)}
    elif status == 401:
        headers = {"WWW-Authenticate": "Bearer"}
    return error_response(status, str(exc), headers=headers)


def _validation_error(request: Request, exc: Exception) -> ApiJSONResponse:
    assert isinstance(exc, RequestValidationError)
    details = []
    for error in exc.errors():
        # The location without "body"/"query", so the field reads as sent.
        where = [str(part) for part in error.get("loc", ()) if part not in ("body",)]
        details.append({"field": ".".join(where[1:] if where[:1] in (["query"], ["path"],
                                                                       ["header"]) else where),
                        "loc": list(error.get("loc", ())), "msg": error.get("msg", ""),
                        "type": error.get("type", "")})
    first = details[0] if details else {"field": "", "msg": "invalid request"}
    message = f"{first['field']}: {first['msg']}" if first["field"] else first["msg"]
    return error_response(422, message, details)


def _http_error(request: Request, exc: Exception) -> ApiJSONResponse:
    assert isinstance(exc, HTTPException)
    return error_response(exc.status_code, str(exc.detail), headers=exc.headers)


def _unexpected(request: Request, exc: Exception) -> ApiJSONResponse:
    log.exception("%s %s failed", request.method, request.url.path)
    return error_response(500, "internal error (logged by the server)")


def install_error_handlers(app: FastAPI) -> None:
    """Answer every error of *app* with the envelope."""
    app.add_exception_handler(BotpolyError, _library_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
