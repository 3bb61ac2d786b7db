"""FastAPI dependencies as ``Annotated`` aliases (the full-stack-fastapi-template way).

A route declares the scope it needs in one way: ``openapi_extra=requires("prices:read")``
(``ANY_SCOPE``: any valid token). :class:`GuardedRoute` reads it and admits the caller
before FastAPI reads the body, validates parameters or solves any dependency (a database
connection included): it authenticates the bearer token (header only: tokens in query
strings are ignored), enforces the scope and counts the request against the subject's rate
limit. So a request without a valid token is 401 whatever its parameters, one lacking the
scope is 403 before any 422, and neither touches the database. The hot path
(``GET /predictions/{symbol}``) thus solves no dependency at all; a route that needs the
caller takes ``principal: Caller``, which only hands over the principal already admitted.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Iterator
from typing import Annotated, Any

from fastapi import Depends, Request, Security
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.engine import Connection
from starlette.responses import Response

from services.api.core.errors import guarded_responses
from services.api.core.security import InvalidToken, Principal
from services.api.state import ApiState
from services.common.errors import ApiError

bearer = HTTPBearer(auto_error=False, description="RS256 access token from /api/v1/auth/token")

# Where GuardedRoute leaves the admitted principal (the ASGI scope of the request).
PRINCIPAL = "pricecast.principal"
ANY_SCOPE = ""  # any valid token
Credentials = Annotated[HTTPAuthorizationCredentials | None, Security(bearer)]


_ERRORS = "pricecast.errors"  # requires() -> GuardedRoute, never in OpenAPI


def requires(scope: str, *errors: str) -> dict[str, Any]:
    """``openapi_extra`` of a route only a token with ``scope`` may call (ANY_SCOPE: any
    valid token) and the catalogue ``errors`` it answers beside the guard's own
    (``GUARDED_ERRORS``). OpenAPI shows the scope (``x-scope``), the bearer scheme and
    every error response."""
    return {"x-scope": scope, _ERRORS: errors}


def required_scope(openapi_extra: dict[str, Any] | None) -> str | None:
    """The scope a route declared with :func:`requires`; None for an open route."""
    scope = (openapi_extra or {}).get("x-scope")
    return scope if isinstance(scope, str) else None


def get_conn(request: Request) -> Iterator[Connection]:
    """A pooled connection (commit-as-you-go); runs in the threadpool like the routes."""
    with request.app.state.api.engine.connect() as conn:
        yield conn


ConnDep = Annotated[Connection, Depends(get_conn)]


def authenticate_header(state: ApiState, authorization: str | None) -> Principal:
    """``Authorization: Bearer <token>`` -> the verified principal, or ERR_AUTH_001."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError("ERR_AUTH_001", "Missing bearer token")
    return verify_token(state, token.strip())


def verify_token(state: ApiState, token: str) -> Principal:
    try:
        return state.tokens.verify(token)
    except InvalidToken:
        raise ApiError("ERR_AUTH_001") from None


def authorize(principal: Principal, scope: str) -> None:
    if scope != ANY_SCOPE and scope not in principal.scopes:
        raise ApiError("ERR_AUTH_002", details={"required_scope": scope})


async def admit(request: Request, scope: str) -> Principal:
    """Authenticate (401), authorize (403), then deny-list and rate limit (401 / 429)."""
    state: ApiState = request.app.state.api
    principal = authenticate_header(state, _authorization(request))
    authorize(principal, scope)
    await state.gate.admit(principal.subject, principal.jti, state.settings.rate_limit_per_minute)
    return principal


def _authorization(request: Request) -> str | None:
    for name, value in request.scope["headers"]:
        if name == b"authorization":
            return value.decode("latin-1")
    return None


async def admitted(request: Request, credentials: Credentials) -> Principal:
    """The principal :class:`GuardedRoute` admitted (``credentials`` only documents the
    bearer scheme in OpenAPI)."""
    principal: Principal | None = request.scope.get(PRINCIPAL)
    if principal is None:
        raise RuntimeError(f"{request.url.path}: a route taking the caller must use requires()")
    return principal


class GuardedRoute(APIRoute):
    """An ``APIRoute`` that admits the caller before anything else (see the module doc)."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        extra = dict(kwargs.get("openapi_extra") or {})
        errors = extra.pop(_ERRORS, ())
        scope = required_scope(extra)
        if scope is not None:
            own = kwargs.get("responses") or {}
            kwargs["responses"] = {**guarded_responses(scope != ANY_SCOPE, *errors), **own}
        kwargs["openapi_extra"] = extra or None
        super().__init__(path, endpoint, **kwargs)
        takes_caller = any(
            dependency.call is admitted for dependency in self.dependant.dependencies
        )
        if scope is not None and not takes_caller:
            # The Caller's bearer Security documents itself; any other guarded route says so.
            self.openapi_extra = {"security": [{"HTTPBearer": []}], **extra}

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        scope = required_scope(self.openapi_extra)
        if scope is None:
            return handler

        async def guarded(request: Request) -> Response:
            request.scope[PRINCIPAL] = await admit(request, scope)
            return await handler(request)

        return guarded


Caller = Annotated[Principal, Depends(admitted)]


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"
