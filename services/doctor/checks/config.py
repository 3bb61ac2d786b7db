"""The environment the services read their settings from."""

from __future__ import annotations

from services.doctor.model import CheckSpec, Context, Finding


def environment(ctx: Context) -> Finding:
    """In production every connection setting and the key location must be explicit: a
    silently used localhost default is the classic 'works on my machine' outage."""
    name = "config.environment"
    settings = ctx.settings
    gaps = settings.production_gaps(ctx.environ)
    data = {"env": settings.env, "unset": list(gaps.unset), "jwt_keys_unset": gaps.jwt_keys_unset}
    if settings.is_production:
        if gaps:
            evidence = f"env=prod; not set: {', '.join(gaps.missing) or '-'}"
            if gaps.localhost_defaults:
                evidence += f"; still the localhost default: {', '.join(gaps.localhost_defaults)}"
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
    if gaps.unset:
        return Finding(
            name,
            "ok",
            f"env={settings.env}; defaults in use for {', '.join(gaps.unset)} "
            "(fine outside production)",
            data=data,
        )
    return Finding(name, "ok", f"env={settings.env}; connection settings explicit", data=data)


CHECKS = (CheckSpec("config.environment", environment, about="production settings explicit"),)
