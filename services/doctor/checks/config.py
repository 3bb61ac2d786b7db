"""The environment the services read their settings from."""

from __future__ import annotations

from services.common.config import DEFAULT_DATABASE_URL, DEFAULT_REDIS_URL
from services.doctor.model import CheckSpec, Context, Finding

CONNECTION_VARS = ("DATABASE_URL", "REDIS_URL", "KAFKA_BOOTSTRAP_SERVERS")
KEY_VARS = ("PRICECAST_JWT_PRIVATE_KEY_FILE", "PRICECAST_JWT_PUBLIC_KEYS_DIR")


def environment(ctx: Context) -> Finding:
    """In production every connection setting and the key location must be explicit: a
    silently used localhost default is the classic 'works on my machine' outage."""
    name = "config.environment"
    s = ctx.settings
    env = ctx.environ
    unset = [v for v in CONNECTION_VARS if not env.get(v, "").strip()]
    keys_unset = not any(env.get(v, "").strip() for v in KEY_VARS)
    data = {"env": s.env, "unset": unset, "jwt_keys_unset": keys_unset}
    if s.env == "prod":
        missing = unset + (
            ["PRICECAST_JWT_PUBLIC_KEYS_DIR (or ..._PRIVATE_KEY_FILE)"] if keys_unset else []
        )
        defaults = []
        if s.database_url == DEFAULT_DATABASE_URL:
            defaults.append("database_url")
        if s.redis_url == DEFAULT_REDIS_URL:
            defaults.append("redis_url")
        if missing or defaults:
            evidence = f"env=prod; not set: {', '.join(missing) or '-'}"
            if defaults:
                evidence += f"; still the localhost default: {', '.join(defaults)}"
            return Finding(
                name,
                "fail",
                evidence,
                "set them in the Deployment (ConfigMap for URLs without secrets, Secret for "
                "DATABASE_URL with a password and the JWT key files): see k8s/",
                data,
            )
        return Finding(
            name, "ok", "env=prod; connection settings and key location explicit", data=data
        )
    if unset:
        return Finding(
            name,
            "ok",
            f"env={s.env}; defaults in use for {', '.join(unset)} (fine outside production)",
            data=data,
        )
    return Finding(name, "ok", f"env={s.env}; connection settings explicit", data=data)


CHECKS = (CheckSpec("config.environment", environment, about="production settings explicit"),)
