"""The JWT attack suite: every forged or broken token is 401 ERR_AUTH_001, never 500."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from _api_helpers import assert_error
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI
from jose import jwt

from services.api.core.keys import build_keyset
from services.api.core.security import InvalidToken, TokenService
from services.common.config import Settings

URL = "/api/v1/predictions/BTC-USD?interval=1d&horizon=1"


@pytest.fixture(scope="module")
async def app(api_settings_module: Settings) -> Any:
    """Module-wide app: every request here is refused before any database or Redis work."""
    from services.api.main import create_app

    application = create_app(api_settings_module)
    yield application
    await application.state.api.close()


@pytest.fixture(scope="module")
def api_settings_module(settings: Settings, key_paths: Any) -> Settings:
    private, public = key_paths
    return settings.model_copy(
        update={"jwt_private_key_file": private, "jwt_public_keys_dir": public}
    )


@pytest.fixture
def api_settings(api_settings_module: Settings) -> Settings:
    return api_settings_module


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(settings: Settings, **over: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "sub": "attacker",
        "iat": now,
        "exp": now + 600,
        "jti": uuid.uuid4().hex,
        "scope": "predictions:read",
    }
    claims.update(over)
    return {k: v for k, v in claims.items() if v is not None}


class Forge:
    def __init__(self, app: FastAPI, settings: Settings) -> None:
        self.keys = app.state.api.tokens.keys
        self.settings = settings
        self.private = self.keys.signing_key

    def sign(self, claims: dict[str, Any], **headers: Any) -> str:
        hdr = {"kid": self.keys.signing_kid, **headers}
        return jwt.encode(claims, self.private, algorithm="RS256", headers=hdr)

    def valid(self, **over: Any) -> str:
        return self.sign(_claims(self.settings, **over))


def _public_pem(app: FastAPI, key_paths: tuple[Any, Any]) -> bytes:
    public_dir = key_paths[1]
    return next(public_dir.glob("*.pem")).read_bytes()


def _alg_none(f: Forge) -> str:
    header = {"alg": "none", "typ": "JWT", "kid": f.keys.signing_kid}
    body = _claims(f.settings)
    return f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(body).encode())}."


def _hs256_with_public_key(f: Forge, public_pem: bytes) -> str:
    import hashlib
    import hmac

    header = {"alg": "HS256", "typ": "JWT", "kid": f.keys.signing_kid}
    signing_input = (
        f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(_claims(f.settings)).encode())}"
    )
    sig = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(sig)}"


def _tampered(f: Forge) -> str:
    token = f.valid(scope="predictions:read")
    head, _, sig = token.split(".")
    body = _claims(f.settings, scope="predictions:read models:write", sub="admin")
    return f"{head}.{_b64(json.dumps(body).encode())}.{sig}"


def _foreign_key(f: Forge) -> str:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = other.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    # Claims the legitimate kid, but signed by a key the server does not know.
    return jwt.encode(
        _claims(f.settings), pem, algorithm="RS256", headers={"kid": f.keys.signing_kid}
    )


ATTACKS: dict[str, Callable[[Forge], str]] = {
    "alg_none": _alg_none,
    "expired": lambda f: f.valid(iat=int(time.time()) - 3600, exp=int(time.time()) - 10),
    "nbf_in_future": lambda f: f.valid(nbf=int(time.time()) + 3600),
    "missing_exp": lambda f: f.valid(exp=None),
    "missing_sub": lambda f: f.valid(sub=None),
    "missing_iat": lambda f: f.valid(iat=None),
    "missing_jti": lambda f: f.valid(jti=None),
    "missing_aud": lambda f: f.valid(aud=None),
    "missing_iss": lambda f: f.valid(iss=None),
    "missing_scope": lambda f: f.valid(scope=None),
    "wrong_aud": lambda f: f.valid(aud="someone-else"),
    "wrong_iss": lambda f: f.valid(iss="https://evil.example"),
    "sub_not_string": lambda f: f.valid(sub=123),
    "scope_not_string": lambda f: f.valid(scope=["predictions:read"]),
    "exp_not_number": lambda f: f.valid(exp="tomorrow"),
    "tampered_payload": _tampered,
    "signed_by_foreign_key": _foreign_key,
    "unknown_kid": lambda f: f.sign(_claims(f.settings), kid="no-such-key"),
    "kid_path_traversal": lambda f: f.sign(_claims(f.settings), kid="../../../../etc/passwd"),
    "kid_sql": lambda f: f.sign(_claims(f.settings), kid="x' UNION SELECT 'secret' --"),
    "kid_not_string": lambda f: f.sign(_claims(f.settings), kid=["a", "b"]),
    "missing_kid": lambda f: jwt.encode(_claims(f.settings), f.private, algorithm="RS256"),
    "crit_header": lambda f: f.sign(_claims(f.settings), crit=["exp"]),
    "garbage": lambda f: "not.a.jwt",
    "two_segments": lambda f: "abc.def",
    "huge": lambda f: "a." + "b" * 10_000 + ".c",
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
async def test_attack_is_rejected(
    attack: str, app: FastAPI, client: httpx.AsyncClient, api_settings: Settings
) -> None:
    token = ATTACKS[attack](Forge(app, api_settings))
    r = await client.get(URL, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401, (attack, r.text)
    assert r.json()["error"]["code"] == "ERR_AUTH_001"
    assert r.headers["www-authenticate"].startswith("Bearer")


async def test_hs256_signed_with_the_public_key(
    app: FastAPI, client: httpx.AsyncClient, api_settings: Settings, key_paths: tuple[Any, Any]
) -> None:
    token = _hs256_with_public_key(Forge(app, api_settings), _public_pem(app, key_paths))
    r = await client.get(URL, headers={"Authorization": f"Bearer {token}"})
    assert_error(r, 401, "ERR_AUTH_001")


async def test_token_in_query_string_is_ignored(
    app: FastAPI, client: httpx.AsyncClient, api_settings: Settings
) -> None:
    token = Forge(app, api_settings).valid()
    for param in ("access_token", "token", "jwt", "authorization"):
        r = await client.get(f"{URL}&{param}={token}")
        assert r.status_code == 401, param
        assert r.json()["error"]["code"] == "ERR_AUTH_001"


async def test_missing_or_wrong_scheme_is_401(client: httpx.AsyncClient, mint) -> None:
    token = mint()
    for headers in ({}, {"Authorization": f"Basic {token}"}, {"Authorization": token}):
        r = await client.get(URL, headers=headers)
        assert_error(r, 401, "ERR_AUTH_001")


def test_rotation_accepts_every_configured_public_key(
    tmp_path: Any, api_settings: Settings
) -> None:
    """Two public keys accepted (old and new), one signing; tokens of both verify."""
    from services.api.core.keys import ensure_dev_keys

    old_private, old_public = ensure_dev_keys(tmp_path / "old")
    new_private, new_public = ensure_dev_keys(tmp_path / "new")
    for pem in old_public.glob("*.pem"):
        (new_public / pem.name).write_bytes(pem.read_bytes())
    old_service = TokenService(build_keyset(old_private, old_public), api_settings)
    new_service = TokenService(build_keyset(new_private, new_public), api_settings)
    assert len(new_service.keys.jwks["keys"]) == 2
    old_token, _ = old_service.mint("svc", ["predictions:read"])
    new_token, _ = new_service.mint("svc", ["predictions:read"])
    assert new_service.verify(old_token).subject == "svc"
    assert new_service.verify(new_token).subject == "svc"
    with pytest.raises(InvalidToken):
        old_service.verify(new_token)  # the old deployment does not know the new key


def test_verified_claims_cache_never_outlives_exp(api_settings: Settings, key_paths: Any) -> None:
    service = TokenService(build_keyset(*key_paths), api_settings)
    token, _ = service.mint("short", ["predictions:read"], ttl_s=1)
    assert service.verify(token).subject == "short"
    time.sleep(2.1)
    with pytest.raises(InvalidToken):
        service.verify(token)


async def test_jwks_publishes_the_public_keys_only(client: httpx.AsyncClient, app: FastAPI) -> None:
    r = await client.get("/.well-known/jwks.json")
    assert r.status_code == 200
    keys = r.json()["keys"]
    assert {k["kid"] for k in keys} == set(app.state.api.tokens.keys.verify_keys)
    for k in keys:
        assert k["kty"] == "RSA" and k["alg"] == "RS256" and k["use"] == "sig"
        assert set(k) == {"kty", "kid", "alg", "use", "n", "e"}  # no private parameters
