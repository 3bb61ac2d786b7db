"""Who may stream: the REST path's token checks, mapped to close codes.

A token is verified exactly as on REST (``services.api.deps``: RS256 pinned, required claims,
the verified-claims cache), then the deny-list and a per-subject limit on *connection
attempts* (``stream_connects_per_minute``, counted through the gate like REST requests, under
a key of its own) are checked. A token in the query string is refused outright: URLs end up in
proxy and server logs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import parse_qsl

from services.api.core.security import Principal
from services.api.deps import authenticate_header, verify_token
from services.api.state import ApiState
from services.api.stream.hub import Refused
from services.api.stream.protocol import CLOSE_AUTH, CLOSE_LIMIT, CLOSE_SCOPE, Channel
from services.common.errors import ApiError

_TOKEN_PARAMS = {"token", "access_token", "jwt", "auth", "authorization", "bearer", "id_token"}
_JWT_SHAPE = re.compile(r"^[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*$")
# ApiError code -> close code (and the HTTP status the SSE route answers with).
CLOSE_FOR = {"ERR_AUTH_001": CLOSE_AUTH, "ERR_AUTH_002": CLOSE_SCOPE, "ERR_RATE_001": CLOSE_LIMIT}


def token_in_query(query_string: bytes | str) -> bool:
    """The query carries something that looks like a credential (by name or by shape)."""
    text = query_string.decode("latin-1") if isinstance(query_string, bytes) else query_string
    for name, value in parse_qsl(text, keep_blank_values=True):
        if name.lower() in _TOKEN_PARAMS or _JWT_SHAPE.match(value.removeprefix("Bearer ")):
            return True
    return False


def header_value(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key == name:
            return value.decode("latin-1")
    return None


def refused(exc: ApiError) -> Refused:
    return Refused(CLOSE_FOR.get(exc.code, CLOSE_AUTH), exc.message)


def from_header(state: ApiState, authorization: str) -> Principal:
    try:
        return authenticate_header(state, authorization)
    except ApiError as exc:
        raise refused(exc) from None


def from_token(state: ApiState, token: str) -> Principal:
    try:
        return verify_token(state, token.strip())
    except ApiError as exc:
        raise refused(exc) from None


async def admit(state: ApiState, principal: Principal) -> None:
    """Deny-list (4401) and the connection-attempt limit of the subject (4429)."""
    try:
        await state.gate.admit(
            f"stream:{principal.subject}",
            principal.jti,
            state.settings.stream_connects_per_minute,
        )
    except ApiError as exc:
        raise refused(exc) from None


def authorize(principal: Principal, channels: Iterable[Channel]) -> None:
    for channel in channels:
        if channel.scope not in principal.scopes:
            raise Refused(CLOSE_SCOPE, f"{channel.name} needs scope {channel.scope}")
