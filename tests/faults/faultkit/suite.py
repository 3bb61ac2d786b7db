"""Which faults the suite runs: the reduced CI set, or all of them (``PRICECAST_FAULTS=full``)."""

from __future__ import annotations

import os

from faultkit.scenario import ALL_FAULTS, Config

FULL = os.environ.get("PRICECAST_FAULTS", "").lower() == "full"

# ``make test`` (CI, ~5 minutes on 2 cores): the faults with shorter outages, one kill and one
# graceful stop of a service each. ``make test-faults``: all of them, PostgreSQL cut for 60 s.
# The broker restart is in both (docs/faults.md, "Consumers after a broker restart").
REDUCED_FAULTS = (
    "postgres_unreachable",
    "redis_restart",
    "broker_restart",
    "sigkill_ingestion",
    "sigterm_prediction",
    "sigkill_api",
    "db_pool_exhausted",
)
FAULTS = ALL_FAULTS if FULL else REDUCED_FAULTS


def fault_config() -> Config:
    if FULL:
        return Config(faults=ALL_FAULTS, pg_outage_s=60.0, expected_duration_s=420.0)
    return Config(
        faults=REDUCED_FAULTS,
        pg_outage_s=12.0,
        redis_outage_s=6.0,
        broker_outage_s=3.0,
        pool_hold_s=8.0,
        settle_s=3.0,
        post_s=2.0,
        expected_duration_s=300.0,
    )
