"""RSA key material for access tokens: the signing key, the accepted public keys, the JWKS.

Key ids are RFC 7638 thumbprints of the public keys, so a ``kid`` is never read from a file
name or a token: a token's ``kid`` is only ever looked up in the configured set. Key material
is never logged.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jose import jwk
from jose.backends.base import Key

from services.common.config import Settings

log = logging.getLogger(__name__)

ALGORITHM = "RS256"


def _b64u_uint(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def public_jwk(public: rsa.RSAPublicKey) -> dict[str, str]:
    numbers = public.public_numbers()
    return {"kty": "RSA", "n": _b64u_uint(numbers.n), "e": _b64u_uint(numbers.e)}


def thumbprint(public: rsa.RSAPublicKey) -> str:
    """RFC 7638 JWK thumbprint (SHA-256, base64url)."""
    canonical = json.dumps(public_jwk(public), sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(canonical.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _public_pem(public: rsa.RSAPublicKey) -> bytes:
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@dataclass(frozen=True)
class KeySet:
    """One signing key (optional: a verify-only replica needs none) and every accepted key."""

    signing_kid: str | None
    signing_key: Key | None = field(repr=False)
    verify_keys: dict[str, Key] = field(repr=False)
    jwks: dict[str, Any] = field(repr=False)

    def verify_key(self, kid: object) -> Key | None:
        return self.verify_keys.get(kid) if isinstance(kid, str) else None


def _load_public(path: Path) -> rsa.RSAPublicKey:
    key = serialization.load_pem_public_key(path.read_bytes())
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError(f"{path}: not an RSA public key")
    return key


def _load_private(path: Path) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError(f"{path}: not an RSA private key")
    if key.key_size < 2048:
        raise ValueError(f"{path}: RSA keys must have at least 2048 bits")
    return key


def build_keyset(
    private_file: Path | None, public_dir: Path | None, signing_kid: str = ""
) -> KeySet:
    publics: dict[str, rsa.RSAPublicKey] = {}
    if public_dir is not None:
        for pem in sorted(public_dir.glob("*.pem")):
            key = _load_public(pem)
            publics[thumbprint(key)] = key
    signing: Key | None = None
    kid: str | None = None
    if private_file is not None:
        private = _load_private(private_file)
        own = private.public_key()
        kid = signing_kid or thumbprint(own)
        publics.setdefault(kid, own)
        private_pem = private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        signing = jwk.construct(private_pem.decode(), ALGORITHM)
    if not publics:
        raise RuntimeError("no JWT public key configured (PRICECAST_JWT_PUBLIC_KEYS_DIR)")
    verify = {
        key_id: jwk.construct(_public_pem(public).decode(), ALGORITHM)
        for key_id, public in publics.items()
    }
    jwks = {
        "keys": [
            {**public_jwk(public), "kid": key_id, "alg": ALGORITHM, "use": "sig"}
            for key_id, public in publics.items()
        ]
    }
    return KeySet(kid, signing, verify, jwks)


def ensure_dev_keys(state_dir: Path) -> tuple[Path, Path]:
    """Generate (once) a local RSA key pair under ``state_dir/keys``; private key mode 0600."""
    keys = state_dir / "keys"
    private_path = keys / "private.pem"
    public_dir = keys / "public"
    public_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(keys, 0o700)
    if not private_path.exists():
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        public = private.public_key()
        (public_dir / f"{thumbprint(public)}.pem").write_bytes(_public_pem(public))
        # Written under a temporary name and renamed: readers never see a partial key.
        tmp = keys / f".private-{os.getpid()}.pem"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
        os.replace(tmp, private_path)
        log.info("generated a development JWT key pair under %s", keys)
    return private_path, public_dir


def load_keyset(settings: Settings) -> KeySet:
    """The configured keys; outside production, development keys when none are configured."""
    settings.require_jwt_keys()
    private_file, public_dir = settings.jwt_private_key_file, settings.jwt_public_keys_dir
    if not settings.jwt_keys_configured:
        private_file, public_dir = ensure_dev_keys(settings.state_dir)
    return build_keyset(private_file, public_dir, settings.jwt_signing_kid)
