"""Access tokens (RS256 JWT, python-jose), client secrets (argon2) and refresh tokens.

Verification is strict: the algorithm is pinned to RS256 *before* any key is chosen, the
``kid`` must name a configured key, and exp, iat, sub, aud, iss, jti and scope are required.
Verified claims are cached per token for a short time (never past ``exp``), so the hot path
does one dictionary lookup instead of an RSA verification.
"""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from jose import jwt
from jose.exceptions import JOSEError

from services.api.core.keys import ALGORITHM, KeySet
from services.common.config import Settings
from services.common.errors import AuthError

SCOPES: dict[str, str] = {
    "prices:read": "read assets and price bars",
    "predictions:read": "read predictions, their history and accuracy",
    "models:read": "read model versions and champions",
    "models:write": "request retraining",
}
REQUIRED_CLAIMS = ("exp", "iat", "sub", "aud", "iss", "jti", "scope")
_MAX_TOKEN_CHARS = 8192
_CACHE_MAX = 50_000


class InvalidToken(AuthError):
    """The token cannot be trusted; the message is for logs, never for the client."""


@dataclass(frozen=True, slots=True)
class Principal:
    subject: str
    scopes: frozenset[str]
    jti: str
    expires_at: float
    client_id: str | None = None


def parse_scopes(value: str | Iterable[str] | None) -> frozenset[str]:
    if value is None:
        return frozenset()
    items = value.split() if isinstance(value, str) else list(value)
    return frozenset(scope for scope in items if scope)


def unknown_scopes(scopes: Iterable[str]) -> set[str]:
    return {scope for scope in scopes if scope not in SCOPES}


class TokenService:
    """Mints and verifies access tokens with one :class:`KeySet`."""

    def __init__(self, keys: KeySet, settings: Settings) -> None:
        self.keys = keys
        self.issuer = settings.jwt_issuer
        self.audience = settings.jwt_audience
        self.ttl_s = settings.access_token_ttl_s
        self.cache_s = settings.api_token_cache_s
        self._cache: dict[str, tuple[Principal, float]] = {}

    # --- minting ---------------------------------------------------------------------
    def mint(
        self,
        subject: str,
        scopes: Iterable[str],
        *,
        client_id: str | None = None,
        ttl_s: int | None = None,
    ) -> tuple[str, Principal]:
        if self.keys.signing_key is None or self.keys.signing_kid is None:
            raise RuntimeError("this process has no JWT signing key")
        now = int(time.time())
        exp = now + (ttl_s or self.ttl_s)
        scope = " ".join(sorted(set(scopes)))
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": subject,
            "iat": now,
            "nbf": now,
            "exp": exp,
            "jti": uuid.uuid4().hex,
            "scope": scope,
        }
        if client_id:
            claims["client_id"] = client_id
        token = jwt.encode(
            claims,
            self.keys.signing_key,
            algorithm=ALGORITHM,
            headers={"kid": self.keys.signing_kid, "typ": "JWT"},
        )
        principal = Principal(subject, parse_scopes(scope), claims["jti"], exp, client_id)
        return token, principal

    # --- verification ----------------------------------------------------------------
    def verify(self, token: str) -> Principal:
        """Claims of a valid token; raises :class:`InvalidToken` otherwise."""
        now = time.time()
        cached = self._cache.get(token)
        if cached is not None:
            if now < cached[1]:
                return cached[0]
            del self._cache[token]
        principal = self._verify_uncached(token)
        if len(self._cache) >= _CACHE_MAX:
            self._cache.clear()
        self._cache[token] = (principal, min(principal.expires_at, now + self.cache_s))
        return principal

    def _verify_uncached(self, token: str) -> Principal:
        if not token or len(token) > _MAX_TOKEN_CHARS or token.count(".") != 2:
            raise InvalidToken("malformed token")
        try:
            header = jwt.get_unverified_header(token)
        except JOSEError as exc:
            raise InvalidToken(f"bad header: {exc}") from exc
        if header.get("alg") != ALGORITHM:
            raise InvalidToken("algorithm not allowed")
        if "crit" in header:
            raise InvalidToken("critical header extensions are not supported")
        key = self.keys.verify_key(header.get("kid"))
        if key is None:
            raise InvalidToken("unknown kid")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=self.audience,
                issuer=self.issuer,
                options={f"require_{claim}": True for claim in REQUIRED_CLAIMS if claim != "scope"}
                | {"leeway": 0},
            )
        except (JOSEError, ValueError, TypeError) as exc:
            raise InvalidToken(f"rejected: {type(exc).__name__}: {exc}") from exc
        scope, sub, jti = claims.get("scope"), claims.get("sub"), claims.get("jti")
        if not isinstance(scope, str) or not isinstance(sub, str) or not sub:
            raise InvalidToken("scope and sub must be non-empty strings")
        if not isinstance(jti, str) or not jti:
            raise InvalidToken("jti must be a non-empty string")
        exp = claims.get("exp")
        if not isinstance(exp, int | float):
            raise InvalidToken("exp must be a number")
        client_id = claims.get("client_id")
        return Principal(
            sub,
            parse_scopes(scope),
            jti,
            float(exp),
            client_id if isinstance(client_id, str) else None,
        )

    def forget(self, token: str) -> None:
        self._cache.pop(token, None)


# --- client secrets and refresh tokens ------------------------------------------------

# OWASP's argon2id baseline (19 MiB, t=2, p=1): client secrets are 256-bit random, so this
# guards a leaked table without making every token request cost half a second.
_hasher = PasswordHasher(time_cost=2, memory_cost=19_456, parallelism=1)
# Verified against when the client id is unknown, so both paths cost the same.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


def hash_secret(secret: str) -> str:
    return _hasher.hash(secret)


def verify_secret(secret_hash: str | None, secret: str) -> bool:
    try:
        return _hasher.verify(secret_hash or _DUMMY_HASH, secret) and secret_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def new_client_secret() -> str:
    return secrets.token_urlsafe(32)


def new_refresh_token() -> str:
    return secrets.token_urlsafe(32)


def refresh_token_hash(token: str) -> str:
    """Refresh tokens are 256-bit random: a plain SHA-256 is the right hash for lookup."""
    return hashlib.sha256(token.encode()).hexdigest()
