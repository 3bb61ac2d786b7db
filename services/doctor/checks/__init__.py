"""Every doctor check, in the order the report lists them."""

from __future__ import annotations

from services.doctor.checks import (
    alerts,
    auth,
    cache,
    config,
    data,
    exchange,
    kafka,
    postgres,
    runtime,
    stream,
)
from services.doctor.model import CheckSpec

ALL_CHECKS: tuple[CheckSpec, ...] = (
    *config.CHECKS,
    *postgres.CHECKS,
    *data.CHECKS,
    *kafka.CHECKS,
    *cache.CHECKS,
    *auth.CHECKS,
    *runtime.CHECKS,
    *alerts.CHECKS,
    *exchange.CHECKS,
    *stream.CHECKS,
)
NAMES: tuple[str, ...] = tuple(check.name for check in ALL_CHECKS)
