"""Every error leaves as ``{"error": {"code", "message", "details"}}``; never a traceback."""

from __future__ import annotations

import logging
from typing import Any

import orjson
import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from services.common.errors import CATALOG, ApiError
from services.common.metrics import AUTH_FAILURES

log = logging.getLogger(__name__)

# Protocol-level answers that are outside docs/architecture.md's catalogue keep the same shape.
HTTP_CODES: dict[int, str] = {
    400: "ERR_HTTP_400",
    404: "ERR_NOT_FOUND",
    405: "ERR_METHOD_NOT_ALLOWED",
    413: "ERR_PAYLOAD_TOO_LARGE",
    415: "ERR_UNSUPPORTED_MEDIA_TYPE",
    500: "ERR_INTERNAL",
}


def error_response(
    status: int,
    code: str,
    message: str,
    details: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    body = orjson.dumps({"error": {"code": code, "message": message, "details": details or {}}})
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def error_body(code: str, message: str) -> bytes:
    return orjson.dumps({"error": {"code": code, "message": message, "details": {}}})


def error_schema(code: str) -> dict[str, Any]:
    """OpenAPI ``responses`` entry for a catalogue code."""
    return {
        "description": f"{code}: {CATALOG[code][1]}",
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["code", "message", "details"],
                            "properties": {
                                "code": {"type": "string"},
                                "message": {"type": "string"},
                                "details": {"type": "object"},
                            },
                        }
                    },
                }
            }
        },
    }


# What every route behind the guard may answer: no or invalid token, missing scope, rate
# limit, invalid request, database unavailable.
GUARDED_ERRORS = ("ERR_AUTH_001", "ERR_AUTH_002", "ERR_RATE_001", "ERR_VAL_001", "ERR_DB_001")


def guarded_responses(scoped: bool, *codes: str) -> dict[int | str, dict[str, Any]]:
    """``responses`` of a guarded route: :data:`GUARDED_ERRORS` (without the 403 when any
    valid token will do) and the route's own ``codes``."""
    common = [code for code in GUARDED_ERRORS if scoped or code != "ERR_AUTH_002"]
    return responses(*common, *codes)


def unknown_symbol(symbol: str) -> ApiError:
    """ERR_PRED_002 (404) for a symbol the assets table does not hold."""
    return ApiError("ERR_PRED_002", f"Unknown symbol {symbol}", {"symbol": symbol})


def responses(*codes: str) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route: each catalogue code under its HTTP status."""
    out: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        status = CATALOG[code][0]
        entry = error_schema(code)
        if status in out:
            out[status]["description"] += f"; {entry['description']}"
        else:
            out[status] = entry
    return out


async def _pricecast(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    if exc.code.startswith("ERR_AUTH"):
        AUTH_FAILURES.labels(exc.code).inc()
    headers = dict(exc.headers)
    if exc.status == 401:
        headers.setdefault("WWW-Authenticate", 'Bearer realm="pricecast"')
    return error_response(exc.status, exc.code, exc.message, exc.details, headers)


def _field(loc: tuple[Any, ...] | list[Any]) -> str:
    return ".".join(str(part) for part in loc)


async def _validation(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"field": _field(error.get("loc", ())), "message": str(error.get("msg", ""))[:200]}
        for error in exc.errors()[:20]
    ]
    return error_response(422, "ERR_VAL_001", "Invalid request parameters", {"errors": errors})


async def _http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    code = HTTP_CODES.get(exc.status_code, f"ERR_HTTP_{exc.status_code}")
    message = exc.detail if isinstance(exc.detail, str) else "HTTP error"
    return error_response(exc.status_code, code, message, headers=dict(exc.headers or {}))


async def _database(request: Request, exc: Exception) -> Response:
    log.warning("database unavailable: %s", type(exc).__name__)
    return error_response(503, "ERR_DB_001", CATALOG["ERR_DB_001"][1], headers={"Retry-After": "5"})


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _pricecast)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)
    for exc_type in (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError):
        app.add_exception_handler(exc_type, _database)
    # Anything else is answered (500, no traceback) by ``ApiMiddleware``.
