"""Every doctor check, in the order the report lists them."""

from __future__ import annotations

from services.doctor.checks import (
    auth,
    cache,
    config,
    data,
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
    *stream.CHECKS,
)
NAMES: tuple[str, ...] = tuple(c.name for c in ALL_CHECKS)
