"""OAuth2-style token endpoints: client credentials, refresh rotation, revocation.

Bodies are ``application/x-www-form-urlencoded`` as RFC 6749 has them. ``/auth/token`` and
``/auth/refresh`` carry a stricter rate limit per client address (argon2 is deliberately slow).
"""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Form, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from services.api.core.errors import GUARDED_ERRORS, responses
from services.api.core.security import (
    parse_scopes,
    unknown_scopes,
    verify_secret,
)
from services.api.deps import ANY_SCOPE, Caller, GuardedRoute, client_address, requires
from services.api.queries import auth as queries
from services.api.schemas import RevokeResponse, TokenResponse
from services.api.state import ApiState
from services.common.errors import ApiError

router = APIRouter(prefix="/api/v1/auth", tags=["auth"], route_class=GuardedRoute)

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


async def _token_request(request: Request) -> ApiState:
    """Count a token request against its client address's stricter limit (ERR_RATE_001)."""
    state: ApiState = request.app.state.api
    await state.gate.count(
        f"token:{client_address(request)}", state.settings.rate_limit_token_per_minute
    )
    return state


def _token_response(state: ApiState, grant: queries.Grant, refresh_token: str) -> JSONResponse:
    access, _ = state.tokens.mint(grant.subject, grant.scopes, client_id=grant.client_id)
    body = TokenResponse(
        access_token=access,
        expires_in=state.tokens.ttl_s,
        scope=" ".join(sorted(grant.scopes)),
        refresh_token=refresh_token,
    )
    return JSONResponse(body.model_dump(), headers=NO_STORE)


def _client_credentials(
    state: ApiState, client_id: str, client_secret: str, scope: str | None
) -> tuple[queries.Grant, str]:
    with state.engine.connect() as conn:
        client = queries.get_client(conn, client_id)
        ok = verify_secret(client.secret_hash if client else None, client_secret)
        if client is None or not ok or client.disabled:
            raise ApiError("ERR_AUTH_001", "Invalid client credentials")
        requested = parse_scopes(scope) if scope else client.scopes
        unknown = unknown_scopes(requested)
        if unknown:
            raise ApiError("ERR_VAL_001", "Unknown scope", {"unknown_scopes": sorted(unknown)})
        if not requested <= client.scopes:
            raise ApiError(
                "ERR_AUTH_002",
                "Client may not request these scopes",
                {"not_allowed": sorted(requested - client.scopes)},
            )
        grant = queries.Grant(client.client_id, client.client_id, requested, uuid.uuid4())
        refresh = queries.issue_refresh(conn, grant, state.settings.refresh_token_ttl_s)
        conn.commit()
        return grant, refresh


@router.post(
    "/token",
    summary="Client credentials grant: an access token and a refresh token",
    response_model=TokenResponse,
    responses=responses(*GUARDED_ERRORS),
)
async def issue_token(
    request: Request,
    client_id: Annotated[str, Form(min_length=1, max_length=128)],
    client_secret: Annotated[str, Form(min_length=1, max_length=256)],
    grant_type: Annotated[Literal["client_credentials"], Form()] = "client_credentials",
    scope: Annotated[str | None, Form(max_length=512)] = None,
) -> JSONResponse:
    state = await _token_request(request)
    grant, refresh = await run_in_threadpool(
        _client_credentials, state, client_id, client_secret, scope
    )
    return _token_response(state, grant, refresh)


def _rotate(state: ApiState, refresh_token: str) -> tuple[queries.Grant, str]:
    with state.engine.connect() as conn:
        grant, new = queries.rotate_refresh(
            conn,
            refresh_token,
            state.settings.refresh_token_ttl_s,
            state.settings.refresh_reuse_leeway_s,
        )
        conn.commit()
        return grant, new


@router.post(
    "/refresh",
    summary="Rotate a refresh token: new access and refresh tokens; reuse revokes the family",
    response_model=TokenResponse,
    responses=responses("ERR_AUTH_003", "ERR_RATE_001", "ERR_VAL_001", "ERR_DB_001"),
)
async def refresh(
    request: Request,
    refresh_token: Annotated[str, Form(min_length=1, max_length=256)],
    grant_type: Annotated[Literal["refresh_token"], Form()] = "refresh_token",
) -> JSONResponse:
    state = await _token_request(request)
    grant, new = await run_in_threadpool(_rotate, state, refresh_token)
    return _token_response(state, grant, new)


def _revoke_refresh(state: ApiState, token: str, client_id: str | None) -> bool:
    if client_id is None:
        return False
    with state.engine.connect() as conn:
        found = queries.revoke_refresh(conn, token, client_id)
        conn.commit()
        return found


@router.post(
    "/revoke",
    summary="Revoke the presented access token (deny-listed until it expires) and, "
    "optionally, a refresh token's family",
    response_model=RevokeResponse,
    openapi_extra=requires(ANY_SCOPE),
)
async def revoke(
    request: Request,
    principal: Caller,
    refresh_token: Annotated[str | None, Form(max_length=256)] = None,
) -> RevokeResponse:
    state: ApiState = request.app.state.api
    family = False
    if refresh_token:
        family = await run_in_threadpool(_revoke_refresh, state, refresh_token, principal.client_id)
    if not await state.gate.deny(principal.jti, principal.expires_at):
        raise ApiError(
            "ERR_DB_001",
            "Revocation store (Redis) unavailable; the token is revoked on this instance only",
            headers={"Retry-After": "5"},
        )
    return RevokeResponse(revoked=True, refresh_family_revoked=family)
