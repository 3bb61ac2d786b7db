"""JWT keys and the demo token: missing, unreadable, loose permissions, expired, foreign."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jose import jwt

from services.api.core.keys import ensure_dev_keys, load_keyset
from services.api.core.security import TokenService
from services.common.config import Settings

Diagnose = Callable[..., dict[str, Any]]


def _with_state(settings: Settings, state: Path, **extra: Any) -> Settings:
    return settings.model_copy(update={"state_dir": state, **extra})


def _mint(settings: Settings, ttl_s: int = 600) -> str:
    token, _ = TokenService(load_keyset(settings), settings).mint(
        "demo", {"predictions:read"}, ttl_s=ttl_s
    )
    return token


def test_no_keys_yet_is_fine_in_dev_but_fails_in_prod(
    settings: Settings, tmp_path: Path, diagnose_map: Diagnose
) -> None:
    dev = diagnose_map(_with_state(settings, tmp_path), "auth")
    assert dev["auth.jwt_keys"].status == "ok" and "no keys yet" in dev["auth.jwt_keys"].evidence
    assert dev["auth.demo_token"].status == "ok"
    prod = diagnose_map(_with_state(settings, tmp_path, env="prod"), "auth.jwt_keys")
    assert prod["auth.jwt_keys"].status == "fail"
    assert "PRICECAST_JWT_PUBLIC_KEYS_DIR" in prod["auth.jwt_keys"].fix


def test_invalid_and_missing_key_files(
    settings: Settings, tmp_path: Path, diagnose_map: Diagnose
) -> None:
    bad = tmp_path / "private.pem"
    bad.write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    bad.chmod(0o600)
    found = diagnose_map(_with_state(settings, tmp_path, jwt_private_key_file=bad), "auth.jwt_keys")
    keys = found["auth.jwt_keys"]
    assert keys.status == "fail" and "do not load" in keys.evidence
    assert "openssl genpkey" in keys.fix

    gone = tmp_path / "nowhere.pem"
    missing = diagnose_map(
        _with_state(settings, tmp_path, jwt_private_key_file=gone), "auth.jwt_keys"
    )
    assert missing["auth.jwt_keys"].status == "fail"
    assert str(gone) in missing["auth.jwt_keys"].evidence


def test_world_readable_private_key_warns(
    settings: Settings, tmp_path: Path, diagnose_map: Diagnose
) -> None:
    private, public_dir = ensure_dev_keys(tmp_path)
    configured = _with_state(
        settings, tmp_path, jwt_private_key_file=private, jwt_public_keys_dir=public_dir
    )
    assert diagnose_map(configured, "auth.jwt_keys")["auth.jwt_keys"].status == "ok"
    os.chmod(private, 0o644)
    loose = diagnose_map(configured, "auth.jwt_keys")["auth.jwt_keys"]
    assert loose.status == "warn" and "readable by group/others" in loose.evidence
    assert f"chmod 600 {private}" in loose.fix


def test_demo_token_valid_expired_and_foreign(
    settings: Settings, tmp_path: Path, diagnose_map: Diagnose
) -> None:
    state = tmp_path / "state"
    ensure_dev_keys(state)
    dev = _with_state(settings, state)
    token_file = state / "demo-token"

    token_file.write_text(_mint(dev) + "\n")
    ok = diagnose_map(dev, "auth")["auth.demo_token"]
    assert ok.status == "ok" and "valid for 10 more min" in ok.evidence

    keys = load_keyset(dev)
    now = int(time.time())
    claims = {
        "iss": dev.jwt_issuer,
        "aud": dev.jwt_audience,
        "sub": "demo",
        "iat": now - 1000,
        "nbf": now - 1000,
        "exp": now - 120,
        "jti": uuid.uuid4().hex,
        "scope": "predictions:read",
    }
    expired = jwt.encode(
        claims, keys.signing_key, algorithm="RS256", headers={"kid": keys.signing_kid}
    )
    token_file.write_text(expired)
    old = diagnose_map(dev, "auth")["auth.demo_token"]
    assert old.status == "warn" and "expired 2 min ago" in old.evidence
    assert "pricecast token --subject demo" in old.fix

    other_state = tmp_path / "other"
    ensure_dev_keys(other_state)
    token_file.write_text(_mint(_with_state(settings, other_state)))
    foreign = diagnose_map(dev, "auth")["auth.demo_token"]
    assert foreign.status == "fail" and "rotated or regenerated" in foreign.evidence

    token_file.write_text("garbage")
    assert diagnose_map(dev, "auth")["auth.demo_token"].status == "fail"
