"""JWT signing/verification keys and the demo access token."""

from __future__ import annotations

import stat
import time
from pathlib import Path

from services.doctor.model import CheckSpec, Context, Finding, describe


def key_paths(ctx: Context) -> tuple[Path | None, Path | None, str]:
    """The key files the API would use: configured ones, else (outside prod) the
    development pair ``pricecast run`` generates under the state directory."""
    settings = ctx.settings
    if settings.jwt_keys_configured:
        return settings.jwt_private_key_file, settings.jwt_public_keys_dir, "configured"
    keys = settings.state_dir / "keys"
    return keys / "private.pem", keys / "public", "development"


def jwt_keys(ctx: Context) -> Finding:
    """The configured keys load (RSA >= 2048 bits), the private key is private."""
    from services.api.core.keys import build_keyset

    name = "auth.jwt_keys"
    settings = ctx.settings
    private, public_dir, origin = key_paths(ctx)
    if origin == "development":
        if settings.is_production:
            return Finding(
                name,
                "fail",
                "env=prod and no PRICECAST_JWT_PRIVATE_KEY_FILE / PRICECAST_JWT_PUBLIC_KEYS_DIR",
                "mount the key Secret and set PRICECAST_JWT_PUBLIC_KEYS_DIR (API) and "
                "PRICECAST_JWT_PRIVATE_KEY_FILE (token issuer)",
            )
        assert private is not None
        if not private.exists():
            return Finding(
                name,
                "ok",
                f"no keys yet: development keys are generated under {private.parent} on the "
                "first pricecast run / api start",
            )
    missing = [
        str(path) for path in (private, public_dir) if path is not None and not path.exists()
    ]
    if missing:
        return Finding(
            name,
            "fail",
            f"{origin} key path(s) missing: {', '.join(missing)}",
            "fix PRICECAST_JWT_PRIVATE_KEY_FILE / PRICECAST_JWT_PUBLIC_KEYS_DIR or mount the "
            "Secret there (kubectl describe pod: volume mounts)",
        )
    try:
        keyset = build_keyset(private, public_dir, settings.jwt_signing_kid)
    except Exception as exc:  # noqa: BLE001 - the loader's message is the evidence
        return Finding(
            name,
            "fail",
            f"{origin} keys do not load: {describe(exc)}",
            "regenerate: openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "
            "private.pem && openssl pkey -in private.pem -pubout -out public/<name>.pem",
        )
    ctx.keyset = keyset
    evidence = (
        f"{origin} keys: signing kid {keyset.signing_kid or '(none: verify only)'}, "
        f"{len(keyset.verify_keys)} accepted public key(s)"
    )
    if private is not None and private.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        return Finding(
            name,
            "warn",
            f"{evidence}; {private} is readable by group/others "
            f"({stat.filemode(private.stat().st_mode)})",
            f"chmod 600 {private} (Kubernetes: defaultMode: 0400 on the Secret volume)",
        )
    return Finding(name, "ok", evidence)


def demo_token(ctx: Context) -> Finding:
    """``.pricecast/demo-token`` (written by ``pricecast run``): expired, or not accepted by
    the keys the API uses (rotated or regenerated keys)."""
    from jose import jwt

    from services.api.core.security import InvalidToken, TokenService

    name = "auth.demo_token"
    path = ctx.settings.state_dir / "demo-token"
    if not path.exists():
        return Finding(name, "ok", f"no {path} (pricecast run writes one)")
    token = path.read_text().strip()
    remint = "mint a new one: pricecast token --subject demo (or restart pricecast run)"
    try:
        claims = jwt.get_unverified_claims(token)
        exp = float(claims["exp"])
    except Exception as exc:  # noqa: BLE001
        return Finding(name, "fail", f"{path} is not a JWT: {describe(exc)}", remint)
    now = time.time()
    if exp <= now:
        return Finding(
            name,
            "warn",
            f"{path} expired {(now - exp) / 60:.0f} min ago (ERR_AUTH_001 for anyone using it; "
            f"access tokens live {ctx.settings.access_token_ttl_s}s)",
            remint,
            {"expired_s": round(now - exp)},
        )
    keyset = getattr(ctx, "keyset", None)
    if keyset is None:
        return Finding(
            name, "fail", f"{path} cannot be verified: no JWT keys load", "see auth.jwt_keys"
        )
    try:
        principal = TokenService(keyset, ctx.settings).verify(token)
    except InvalidToken as exc:
        return Finding(
            name,
            "fail",
            f"{path} rejected by the configured keys ({exc}): the keys were rotated or "
            "regenerated since it was minted",
            remint,
        )
    return Finding(
        name,
        "ok",
        f"{path} valid for {(exp - now) / 60:.0f} more min, subject {principal.subject}, "
        f"scopes {' '.join(sorted(principal.scopes))}",
    )


CHECKS = (
    CheckSpec("auth.jwt_keys", jwt_keys, about="JWT keys load"),
    CheckSpec("auth.demo_token", demo_token, needs=("auth.jwt_keys",)),
)
