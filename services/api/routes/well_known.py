"""``/.well-known/jwks.json``: every accepted public key (rotation publishes several)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from services.api.schemas import Jwks

router = APIRouter(tags=["auth"])


@router.get("/.well-known/jwks.json", summary="Public keys (JWKS)", response_model=Jwks)
async def jwks(request: Request) -> JSONResponse:
    keys = request.app.state.api.tokens.keys.jwks
    return JSONResponse(keys, headers={"Cache-Control": "public, max-age=300"})
