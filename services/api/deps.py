"""FastAPI dependencies as ``Annotated`` aliases (the full-stack-fastapi-template way).

``PricesReader``, ``PredictionsReader``, ``ModelsReader`` and ``ModelsWriter`` authenticate the
bearer token (header only: tokens in query strings are ignored), enforce the scope and count
the request against the subject's rate limit in one Redis round trip.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Iterator
from typing import Annotated, Any

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.engine import Connection

from services.api.core.security import InvalidToken, Principal
from services.api.state import ApiState
from services.common.errors import PricecastError

bearer = HTTPBearer(auto_error=False, description="RS256 access token from /api/v1/auth/token")


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


def authenticate(state: ApiState, credentials: HTTPAuthorizationCredentials | None) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise PricecastError("ERR_AUTH_001", "Missing bearer token")
    return verify_token(state, credentials.credentials)


def authenticate_header(state: ApiState, authorization: str | None) -> Principal:
    """The same check straight from the header (the hot route skips dependency solving)."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise PricecastError("ERR_AUTH_001", "Missing bearer token")
    return verify_token(state, token.strip())


def verify_token(state: ApiState, token: str) -> Principal:
    try:
        return state.tokens.verify(token)
    except InvalidToken:
        raise PricecastError("ERR_AUTH_001") from None


def authorize(principal: Principal, scope: str) -> None:
    if scope not in principal.scopes:
        raise PricecastError("ERR_AUTH_002", details={"required_scope": scope})


def require(scope: str) -> Callable[..., Coroutine[Any, Any, Principal]]:
    async def dependency(request: Request, credentials: Credentials) -> Principal:
        state: ApiState = request.app.state.api
        principal = authenticate(state, credentials)
        authorize(principal, scope)
        await state.gate.admit(
            principal.subject, principal.jti, state.settings.rate_limit_per_minute
        )
        return principal

    return dependency


def any_token() -> Callable[..., Coroutine[Any, Any, Principal]]:
    async def dependency(request: Request, credentials: Credentials) -> Principal:
        state: ApiState = request.app.state.api
        principal = authenticate(state, credentials)
        await state.gate.admit(
            principal.subject, principal.jti, state.settings.rate_limit_per_minute
        )
        return principal

    return dependency


PricesReader = Annotated[Principal, Depends(require("prices:read"))]
PredictionsReader = Annotated[Principal, Depends(require("predictions:read"))]
ModelsReader = Annotated[Principal, Depends(require("models:read"))]
ModelsWriter = Annotated[Principal, Depends(require("models:write"))]
CurrentPrincipal = Annotated[Principal, Depends(any_token())]


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"
