"""History older than the TimescaleDB refresh window (backfill, late data): its bars equal a
brute-force aggregation on every path, and they stay after tick retention has run.

TimescaleDB path: the refresh policies only refresh the last 89 days and real-time
aggregation only covers data above the watermark, so without migration 0003 such ticks never
reached the bars and retention then dropped them. Nothing here calls ``settle()`` (which
would refresh everything and hide exactly that): only what production runs does.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from _bar_reference import Tick, aggregate, assert_bars_equal
from _storage_helpers import is_timescale, read_bars, write_batch
from sqlalchemy.engine import Engine

from services.common.config import Settings
from services.storage.maintenance import maintenance_once
from services.storage.materialize import backlog, materialize_backfill
from services.storage.retention import drop_old_chunks, drop_old_ticks

RETENTION_DAYS = 90


def history(rng: random.Random, now: datetime, first_day: int, last_day: int) -> list[Tick]:
    """Ticks of two symbols from ``first_day`` to ``last_day`` days ago (up to a minute
    ago): a few per hour, some minutes with several ticks, ties from two sources."""
    ticks: list[Tick] = []
    start = now - timedelta(days=first_day)
    span = int((timedelta(days=first_day - last_day) - timedelta(minutes=1)).total_seconds())
    for _ in range((first_day - last_day) * 30):
        ts = start + timedelta(seconds=rng.randrange(0, span), microseconds=rng.randrange(10**6))
        symbol = rng.choice(["BTC-USD", "ETH-USD"])
        price = round(rng.uniform(10.0, 20.0), 4)
        volume = round(rng.uniform(0.0, 3.0), 3)
        ticks.append((symbol, ts, price, volume, "synthetic"))
        if rng.random() < 0.2:  # same minute, later
            ticks.append((symbol, ts + timedelta(seconds=1), price + 1, volume, "synthetic"))
        if rng.random() < 0.1:  # same instant from another source
            ticks.append((symbol, ts, price - 1, volume, "csv"))
    return ticks


def check_bars(engine: Engine, ticks: list[Tick]) -> None:
    for interval in ("1m", "1h", "1d"):
        assert_bars_equal(read_bars(engine, interval), aggregate(ticks, interval))


def oldest_tick(engine: Engine) -> datetime | None:
    with engine.connect() as conn:
        value: datetime | None = conn.execute(sa.text("SELECT min(ts) FROM price_ticks")).scalar()
        return value


def backfill(engine: Engine, ticks: list[Tick], batch: int = 500) -> None:
    """Oldest first in batches, as ``pricecast backfill`` through the writer does."""
    ordered = sorted(ticks, key=lambda t: t[1])
    for i in range(0, len(ordered), batch):
        write_batch(engine, ordered[i : i + batch])


def pending_days(engine: Engine) -> int:
    with engine.connect() as conn:
        return backlog(conn).days


def test_backfilled_history_matches_brute_force_before_and_after_retention(
    storage: Engine,
) -> None:
    rng = random.Random(5)
    now = datetime.now(UTC)
    ticks = history(rng, now, 200, 0)
    old = [t for t in ticks if t[1] < now - timedelta(days=120)]
    rest = [t for t in ticks if t[1] >= now - timedelta(days=120)]
    backfill(storage, rest)
    backfill(storage, old[::-1], batch=333)  # later still: older history, newest first
    if is_timescale(storage):
        # days of 200..~87 days ago, bookkept for materialisation
        assert pending_days(storage) >= 110
        assert materialize_backfill(storage) >= 110  # the call for `pricecast backfill`
    else:
        assert pending_days(storage) == 0
        assert materialize_backfill(storage) == 0
    assert pending_days(storage) == 0
    check_bars(storage, ticks)

    result = maintenance_once(storage, Settings(tick_retention_days=RETENTION_DAYS))
    assert result["unmaterialized_days"] == 0
    assert result["chunks_dropped"] + result["ticks_deleted"] > 0
    oldest = oldest_tick(storage)
    assert oldest is not None and oldest >= now - timedelta(days=RETENTION_DAYS + 1)
    check_bars(storage, ticks)  # the bars of the dropped ticks are still there


def test_retention_keeps_ticks_until_their_days_are_materialised(storage: Engine) -> None:
    rng = random.Random(8)
    now = datetime.now(UTC)
    ticks = history(rng, now, 150, 100) + history(rng, now, 3, 0)
    backfill(storage, ticks)
    chunks = drop_old_chunks(storage, RETENTION_DAYS)
    deleted = drop_old_ticks(storage, RETENTION_DAYS)
    oldest = oldest_tick(storage)
    assert oldest is not None
    if is_timescale(storage):
        # nothing materialised yet below the window: retention must not touch those ticks
        assert (chunks, deleted) == (0, 0)
        assert oldest < now - timedelta(days=149)
        assert pending_days(storage) >= 50
        # the database's own daily job: materialise, then retention
        with storage.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            job = conn.execute(
                sa.text(
                    "SELECT job_id FROM timescaledb_information.jobs "
                    "WHERE proc_name = 'pricecast_storage_job' AND config ? 'retention_days'"
                )
            ).scalar_one()
            conn.execute(sa.text("CALL run_job(:j)"), {"j": job})
        assert pending_days(storage) == 0
        oldest = oldest_tick(storage)
        assert oldest is not None
    else:
        assert chunks == 0 and deleted > 0  # bars were maintained on insert
    assert oldest >= now - timedelta(days=4)
    check_bars(storage, ticks)


def test_late_ticks_for_dropped_days_never_erase_bars(storage: Engine) -> None:
    """A late tick for a day whose ticks retention already dropped leaves the bars as they
    were on both paths: it may be a re-delivery of a tick already counted (migration 0004;
    TimescaleDB could not merge it anyway, as a refresh recomputes the day from the raw
    ticks of all symbols, which are gone), and the bars of that day are never deleted."""
    rng = random.Random(13)
    now = datetime.now(UTC)
    ticks = history(rng, now, 130, 110)
    backfill(storage, ticks)
    maintenance_once(storage, Settings(tick_retention_days=RETENTION_DAYS))
    assert oldest_tick(storage) is None  # every tick dropped, every bar kept
    late = [("SOL-USD", now - timedelta(days=120), 42.0, 1.0, "csv")]
    late.append(("BTC-USD", now - timedelta(days=120, seconds=1), 43.0, 1.0, "csv"))
    write_batch(storage, late)
    result = maintenance_once(storage, Settings(tick_retention_days=RETENTION_DAYS))
    assert result["unmaterialized_days"] == 0
    check_bars(storage, ticks)
    if not is_timescale(storage):
        assert oldest_tick(storage) is None  # not kept as raw ticks either
        assert result["late_ticks_ignored"] == 2
