"""FastAPI dependencies as ``Annotated`` aliases (the full-stack-fastapi-template way).

``PricesReader``, ``PredictionsReader``, ``ModelsReader``, ``ModelsWriter`` and
``CurrentPrincipal`` authenticate the bearer token (header only: tokens in query strings are
ignored), enforce the scope and count the request against the subject's rate limit.

Auth comes first: routers use :class:`GuardedRoute`, which runs that check before FastAPI
reads the body, validates parameters or solves any other dependency (a database connection
included). So a request without a valid token is 401 whatever its parameters, one lacking
the scope is 403 before any 422, and neither touches the database. The dependency then only
hands over the principal the route already admitted.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Iterator
from typing import Annotated, Any

from fastapi import Depends, Request, Security
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.engine import Connection
from starlette.responses import Response

from services.api.core.security import InvalidToken, Principal
from services.api.state import ApiState
from services.common.errors import PricecastError

bearer = HTTPBearer(auto_error=False, description="RS256 access token from /api/v1/auth/token")

# Where GuardedRoute leaves the admitted principal (the ASGI scope of the request).
PRINCIPAL = "pricecast.principal"
ANY_SCOPE = ""  # any valid token
# Guard dependency -> the scope it requires (ANY_SCOPE: any valid token).
_GUARDS: dict[Callable[..., Any], str] = {}


async def get_state(request: Request) -> ApiState:
    state: ApiState = request.app.state.api
    return state


StateDep = Annotated[ApiState, Depends(get_state)]
Credentials = Annotated[HTTPAuthorizationCredentials | None, Security(bearer)]


def get_conn(request: Request) -> Iterator[Connection]:
    """A pooled connection (commit-as-you-go); runs in the threadpool like the routes."""
    with request.app.state.api.engine.connect() as conn:
        yield conn


ConnDep = Annotated[Connection, Depends(get_conn)]


def authenticate_header(state: ApiState, authorization: str | None) -> Principal:
    """``Authorization: Bearer <token>`` -> the verified principal, or ERR_AUTH_001."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise PricecastError("ERR_AUTH_001", "Missing bearer token")
    return verify_token(state, token.strip())


def verify_token(state: ApiState, token: str) -> Principal:
    try:
        return state.tokens.verify(token)
    except InvalidToken:
        raise PricecastError("ERR_AUTH_001") from None


def authorize(principal: Principal, scope: str) -> None:
    if scope != ANY_SCOPE and scope not in principal.scopes:
        raise PricecastError("ERR_AUTH_002", details={"required_scope": scope})


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


def principal_of(request: Request) -> Principal:
    """The principal :class:`GuardedRoute` admitted for this request."""
    principal: Principal = request.scope[PRINCIPAL]
    return principal


def require(scope: str) -> Callable[..., Coroutine[Any, Any, Principal]]:
    # ``credentials`` is only there so OpenAPI documents the bearer scheme.
    async def dependency(request: Request, credentials: Credentials) -> Principal:
        principal: Principal | None = request.scope.get(PRINCIPAL)
        if principal is None:  # a route outside GuardedRoute: check here
            principal = await admit(request, scope)
        return principal

    _GUARDS[dependency] = scope
    return dependency


def required_scope(dependant: Dependant, openapi_extra: dict[str, Any] | None) -> str | None:
    """The scope a route requires: ``openapi_extra["x-scope"]`` or a guard dependency."""
    if openapi_extra and isinstance(openapi_extra.get("x-scope"), str):
        return str(openapi_extra["x-scope"])
    for sub in dependant.dependencies:
        if sub.call in _GUARDS:
            return _GUARDS[sub.call]
        found = required_scope(sub, None)
        if found is not None:
            return found
    return None


class GuardedRoute(APIRoute):
    """An ``APIRoute`` that admits the caller before anything else (see the module doc)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        scope = required_scope(self.dependant, self.openapi_extra)
        if scope is None:
            return handler

        async def guarded(request: Request) -> Response:
            request.scope[PRINCIPAL] = await admit(request, scope)
            return await handler(request)

        return guarded


PricesReader = Annotated[Principal, Depends(require("prices:read"))]
PredictionsReader = Annotated[Principal, Depends(require("predictions:read"))]
ModelsReader = Annotated[Principal, Depends(require("models:read"))]
ModelsWriter = Annotated[Principal, Depends(require("models:write"))]
CurrentPrincipal = Annotated[Principal, Depends(require(ANY_SCOPE))]


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"
