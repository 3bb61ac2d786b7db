"""API clients and refresh-token families.

Rotation is one atomic ``UPDATE ... WHERE rotated_at IS NULL ... RETURNING``: of two
concurrent refreshes with the same token exactly one gets the row. A token presented again
after its rotation is a reuse: its whole family is revoked.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from services.api.core.security import new_refresh_token, refresh_token_hash
from services.common.errors import ApiError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Client:
    client_id: str
    secret_hash: str
    scopes: frozenset[str]
    disabled: bool


@dataclass(frozen=True)
class Grant:
    client_id: str
    subject: str
    scopes: frozenset[str]
    family_id: uuid.UUID


def get_client(conn: Connection, client_id: str) -> Client | None:
    row = conn.execute(
        sa.text(
            "SELECT client_id, secret_hash, scopes, disabled FROM api_clients "
            "WHERE client_id = :client_id"
        ),
        {"client_id": client_id},
    ).one_or_none()
    if row is None:
        return None
    return Client(row.client_id, row.secret_hash, frozenset(row.scopes), row.disabled)


def create_client(
    conn: Connection, client_id: str, secret_hash: str, scopes: list[str], name: str
) -> None:
    conn.execute(
        sa.text(
            "INSERT INTO api_clients (client_id, secret_hash, scopes, name) "
            "VALUES (:client_id, :secret_hash, :scopes, :name)"
        ),
        {
            "client_id": client_id,
            "secret_hash": secret_hash,
            "scopes": sorted(scopes),
            "name": name,
        },
    )


def issue_refresh(conn: Connection, grant: Grant, ttl_s: int) -> str:
    token = new_refresh_token()
    conn.execute(
        sa.text(
            "INSERT INTO refresh_tokens "
            "(token_hash, family_id, client_id, subject, scopes, expires_at) "
            "VALUES (:token_hash, :family_id, :client_id, :subject, :scopes, "
            "now() + make_interval(secs => :ttl))"
        ),
        {
            "token_hash": refresh_token_hash(token),
            "family_id": grant.family_id,
            "client_id": grant.client_id,
            "subject": grant.subject,
            "scopes": sorted(grant.scopes),
            "ttl": ttl_s,
        },
    )
    return token


def rotate_refresh(conn: Connection, token: str, ttl_s: int, leeway_s: float) -> tuple[Grant, str]:
    """Consume ``token`` and issue its successor; ERR_AUTH_003 on reuse, revocation, expiry.

    ``conn`` is a commit-as-you-go connection: the caller commits a success; a family
    revocation is committed here, before the error is raised.
    """
    digest = refresh_token_hash(token)
    row = conn.execute(
        sa.text(
            "UPDATE refresh_tokens r SET rotated_at = now() "
            "FROM api_clients c "
            "WHERE r.token_hash = :token_hash AND r.rotated_at IS NULL AND r.revoked_at IS NULL "
            "  AND r.expires_at > now() AND c.client_id = r.client_id AND NOT c.disabled "
            "RETURNING r.family_id, r.client_id, r.subject, r.scopes, c.scopes AS allowed"
        ),
        {"token_hash": digest},
    ).one_or_none()
    if row is not None:
        # A client whose scopes were narrowed since the grant gets only what it may still have.
        scopes = frozenset(row.scopes) & frozenset(row.allowed)
        grant = Grant(row.client_id, row.subject, scopes, row.family_id)
        return grant, issue_refresh(conn, grant, ttl_s)

    seen = conn.execute(
        sa.text(
            "SELECT family_id, rotated_at, revoked_at, expires_at FROM refresh_tokens "
            "WHERE token_hash = :token_hash"
        ),
        {"token_hash": digest},
    ).one_or_none()
    if seen is None:
        raise ApiError("ERR_AUTH_003", "Unknown refresh token")
    if seen.revoked_at is not None:
        raise ApiError("ERR_AUTH_003", "Refresh token revoked")
    if seen.rotated_at is not None:
        age = (datetime.now(UTC) - seen.rotated_at).total_seconds()
        if age > leeway_s:
            revoke_family(conn, seen.family_id)
            conn.commit()
            log.warning("refresh token reuse detected: family %s revoked", seen.family_id)
        raise ApiError("ERR_AUTH_003", "Refresh token reused")
    if seen.expires_at <= datetime.now(UTC):
        raise ApiError("ERR_AUTH_003", "Refresh token expired")
    # Still valid but its client is disabled.
    revoke_family(conn, seen.family_id)
    conn.commit()
    raise ApiError("ERR_AUTH_003", "Client disabled")


def revoke_family(conn: Connection, family_id: uuid.UUID) -> int:
    result = conn.execute(
        sa.text(
            "UPDATE refresh_tokens SET revoked_at = now() "
            "WHERE family_id = :family_id AND revoked_at IS NULL"
        ),
        {"family_id": family_id},
    )
    return int(result.rowcount or 0)


def revoke_refresh(conn: Connection, token: str, client_id: str | None) -> bool:
    """Revoke the family of ``token`` (only the owning client may); True if one was found."""
    row = conn.execute(
        sa.text("SELECT family_id, client_id FROM refresh_tokens WHERE token_hash = :token_hash"),
        {"token_hash": refresh_token_hash(token)},
    ).one_or_none()
    if row is None or (client_id is not None and row.client_id != client_id):
        return False
    revoke_family(conn, row.family_id)
    return True
