"""Ticks arriving after retention deleted their range (Kafka re-delivery, a backfill run
twice): they never change the bars, on either path; ticks newer than the horizon still merge.

Plain path (migration 0004): the bar trigger skips ticks older than
``pricecast_meta.ticks_dropped_before`` and deletes them again; without that, a re-delivered
tick whose original retention had deleted passed ``ON CONFLICT DO NOTHING`` and was merged
into its bars a second time. TimescaleDB (0003): days older than the horizon are never
refreshed again; the late raw ticks go at the next retention round.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from _bar_reference import Tick, aggregate, assert_bars_equal
from _storage_helpers import is_timescale, read_bars, settle, write_batch
from sqlalchemy.engine import Engine

from services.common.config import Settings
from services.storage.maintenance import maintenance_loop, maintenance_once
from services.storage.materialize import materialize_backfill
from services.storage.retention import drop_old_ticks

RETENTION_DAYS = 90
SETTINGS = Settings(tick_retention_days=RETENTION_DAYS)


def ticks_around(
    rng: random.Random, start: datetime, minutes: int, symbols: list[str]
) -> list[Tick]:
    """A few ticks per minute from ``start`` on, some sharing a minute or an instant."""
    out: list[Tick] = []
    for m in range(minutes):
        for symbol in symbols:
            ts = start + timedelta(minutes=m, seconds=rng.randrange(50))
            price = round(rng.uniform(10.0, 20.0), 4)
            volume = round(rng.uniform(0.1, 3.0), 3)
            out.append((symbol, ts, price, volume, "synthetic"))
            if rng.random() < 0.3:
                out.append((symbol, ts + timedelta(seconds=5), price + 1, volume, "synthetic"))
            if rng.random() < 0.2:
                out.append((symbol, ts, price - 1, volume * 2, "csv"))
    return out


def all_bars(engine: Engine) -> dict[str, dict[tuple[str, datetime], tuple[Any, ...]]]:
    return {interval: read_bars(engine, interval) for interval in ("1m", "1h", "1d")}


def check_bars(engine: Engine, ticks: list[Tick]) -> None:
    for interval in ("1m", "1h", "1d"):
        assert_bars_equal(read_bars(engine, interval), aggregate(ticks, interval))


def raw_ticks_older_than(engine: Engine, ts: datetime) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                sa.text("SELECT count(*) FROM price_ticks WHERE ts < :ts"), {"ts": ts}
            ).scalar_one()
        )


def old_and_recent(now: datetime, seed: int) -> tuple[list[Tick], list[Tick]]:
    rng = random.Random(seed)
    old = ticks_around(rng, now - timedelta(days=100, hours=3), 150, ["BTC-USD", "ETH-USD"])
    old += ticks_around(rng, now - timedelta(days=95), 30, ["BTC-USD"])
    recent = ticks_around(rng, now - timedelta(hours=3), 60, ["BTC-USD", "ETH-USD"])
    return old, recent


def test_redelivered_ticks_after_retention_leave_bars_unchanged(storage: Engine) -> None:
    now = datetime.now(UTC)
    old, recent = old_and_recent(now, 21)
    write_batch(storage, old + recent)
    first = maintenance_once(storage, SETTINGS)  # materialises (TimescaleDB), then retention
    assert first["ticks_deleted"] + first["chunks_dropped"] > 0
    horizon = now - timedelta(days=RETENTION_DAYS)
    assert raw_ticks_older_than(storage, horizon) == 0
    settle(storage, now - timedelta(days=1))
    check_bars(storage, old + recent)
    before = all_bars(storage)

    # Kafka re-delivers the old ticks (or the backfill runs again): in two batches, one of
    # them mixed with ticks already stored (ON CONFLICT duplicates).
    write_batch(storage, old[: len(old) // 2])
    write_batch(storage, old[len(old) // 2 :] + recent[:50])
    result = maintenance_once(storage, SETTINGS)
    settle(storage, now - timedelta(days=1))
    assert all_bars(storage) == before  # nothing counted twice
    check_bars(storage, old + recent)
    assert raw_ticks_older_than(storage, horizon) == 0
    assert result["ticks_dropped_before"] is not None
    if not is_timescale(storage):
        assert result["late_ticks_ignored"] == len(old)
        assert result["ticks_deleted"] == 0  # the trigger did not keep them


def test_ticks_newer_than_the_horizon_still_merge(storage: Engine) -> None:
    now = datetime.now(UTC)
    old, recent = old_and_recent(now, 34)
    write_batch(storage, old + recent)
    maintenance_once(storage, SETTINGS)
    rng = random.Random(35)
    # One batch: late ticks (ignored) mixed with ticks inside the retention window, some of
    # them in minutes that already have a bar, one of a symbol never seen.
    inside = ticks_around(rng, now - timedelta(days=80), 20, ["BTC-USD"])
    # (a microsecond apart from the stored ticks of those minutes: no key collides)
    inside += ticks_around(
        rng, now - timedelta(hours=2, minutes=30, microseconds=1), 20, ["ETH-USD"]
    )
    inside.append(("SOL-USD", now - timedelta(days=89, hours=20), 33.0, 2.0, "csv"))
    late = ticks_around(rng, now - timedelta(days=99), 10, ["BTC-USD", "SOL-USD"])
    mixed = late + inside
    rng.shuffle(mixed)
    assert write_batch(storage, mixed) == len(mixed)  # all pass ON CONFLICT...
    # TimescaleDB: the SOL-USD tick lies below the refresh window; its day is rolled up by the
    # storage job (every 10 minutes), run here. Plain path: bars are exact already (no-op).
    materialize_backfill(storage)
    settle(storage, now - timedelta(days=85))
    check_bars(storage, old + recent + inside)  # ...only the late ones are left out
    with storage.connect() as conn:
        kept = int(conn.execute(sa.text("SELECT count(*) FROM price_ticks")).scalar_one())
    if not is_timescale(storage):
        assert kept == len(recent) + len(inside)


def test_horizon_is_recorded_only_when_retention_deletes(storage: Engine) -> None:
    """Retention with nothing to delete leaves no horizon: history older than the window can
    still be loaded (its ticks merge, then retention deletes them and keeps the bars)."""
    now = datetime.now(UTC)
    old, recent = old_and_recent(now, 55)
    write_batch(storage, recent)
    assert maintenance_once(storage, SETTINGS)["ticks_dropped_before"] is None
    write_batch(storage, old)  # a first backfill of older history
    result = maintenance_once(storage, SETTINGS)
    horizon = result["ticks_dropped_before"]
    assert horizon is not None
    assert datetime.fromisoformat(horizon) <= now - timedelta(days=RETENTION_DAYS - 1)
    settle(storage, now - timedelta(days=1))
    check_bars(storage, old + recent)
    if not is_timescale(storage):
        assert datetime.fromisoformat(horizon) >= now - timedelta(days=RETENTION_DAYS)
        # a longer retention later does not move the horizon back
        write_batch(storage, [("BTC-USD", now - timedelta(days=200), 1.0, 1.0, "csv")])
        assert drop_old_ticks(storage, 150) == 0  # ignored on insert: nothing to delete
        assert maintenance_once(storage, SETTINGS)["ticks_dropped_before"] == horizon
        check_bars(storage, old + recent)


def test_one_round_at_a_time_across_replicas(storage: Engine) -> None:
    with storage.connect() as other:  # another replica's round holds the lock
        assert other.execute(
            sa.text("SELECT pg_try_advisory_lock(hashtext('pricecast.storage.maintenance'))")
        ).scalar()
        try:
            assert maintenance_once(storage, SETTINGS)["skipped"] is True
        finally:
            other.execute(
                sa.text("SELECT pg_advisory_unlock(hashtext('pricecast.storage.maintenance'))")
            )
    result = maintenance_once(storage, SETTINGS)
    assert result["skipped"] is False
    assert result["storage_path"] == ("timescaledb" if is_timescale(storage) else "postgres")


@pytest.fixture
def unmigrated_engine(
    scratch_database: Callable[..., AbstractContextManager[str]],
) -> Iterator[Engine]:
    """A database whose storage path was never recorded: every maintenance round fails
    with a RuntimeError (not a database error)."""
    with scratch_database("pricecast_storage_empty", migrated=False) as url:
        engine = sa.create_engine(url)
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE pricecast_meta (key text PRIMARY KEY, value text)"))
        try:
            yield engine
        finally:
            engine.dispose()


async def test_failing_rounds_are_retried_and_the_loop_stops_on_stop(
    unmigrated_engine: Engine,
) -> None:
    stop = asyncio.Event()
    outcomes: list[tuple[Any, BaseException | None]] = []

    def on_round(result: Any, error: BaseException | None) -> None:
        outcomes.append((result, error))
        if len(outcomes) >= 3:
            stop.set()

    settings = Settings(storage_maintenance_interval_s=0.05)
    await asyncio.wait_for(
        maintenance_loop(unmigrated_engine, settings, stop, on_round=on_round), 60
    )
    assert len(outcomes) == 3
    assert all(result is None and isinstance(error, RuntimeError) for result, error in outcomes)
    # the advisory lock was given back each time: a round can run again
    with unmigrated_engine.connect() as conn:
        assert conn.execute(
            sa.text("SELECT pg_try_advisory_lock(hashtext('pricecast.storage.maintenance'))")
        ).scalar()
