"""Bars on every storage path equal a brute-force aggregation of the stored raw ticks,
with late, out-of-order, tied and duplicate arrivals, for 1m, 1h and 1d."""

from __future__ import annotations

import random
import threading
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from _bar_reference import Tick, aggregate, assert_bars_equal
from _storage_helpers import settle, write_batch
from sqlalchemy.engine import Engine

T0 = datetime(2024, 3, 9, 22, 0, tzinfo=UTC)


def random_ticks(rng: random.Random, n: int) -> list[Tick]:
    ticks: list[Tick] = []
    for _ in range(n):
        ts = T0 + timedelta(microseconds=rng.randrange(0, 3 * 86_400 * 10**6))
        if ticks and rng.random() < 0.05:  # same instant from another source: a tie
            ts = rng.choice(ticks)[1]
        volume = 0.0 if rng.random() < 0.1 else round(rng.uniform(0.001, 5.0), 6)
        ticks.append(
            (
                rng.choice(["BTC-USD", "ETH-USD", "X-USD"]),
                ts,
                round(rng.uniform(10.0, 20.0), 4),
                volume,
                rng.choice(["coingecko", "synthetic", "csv"]),
            )
        )
    # a whole minute with zero volume (VWAP undefined)
    ticks.append(("X-USD", T0 + timedelta(minutes=7, seconds=1), 15.0, 0.0, "csv"))
    return ticks


def stored_ticks(engine: Engine) -> list[Tick]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT symbol, ts, price, volume, source FROM price_ticks"))
        return [tuple(r) for r in rows]


def read_bars(engine: Engine, interval: str) -> dict[tuple[str, datetime], tuple]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                f"SELECT symbol, bucket, open, high, low, close, volume, trade_count, vwap "
                f"FROM price_{interval}"
            )
        )
        return {(r[0], r[1]): tuple(r[2:]) for r in rows}


def check_all_levels(engine: Engine) -> None:
    ticks = stored_ticks(engine)
    for interval in ("1m", "1h", "1d"):
        assert_bars_equal(read_bars(engine, interval), aggregate(ticks, interval))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_late_and_duplicate_ticks_match_brute_force(storage: Engine, seed: int) -> None:
    rng = random.Random(seed)
    ticks = random_ticks(rng, 3000)
    in_order = sorted(ticks, key=lambda t: t[1])
    # First most ticks in time order (live), then the rest late and shuffled, then
    # re-deliveries of already stored ticks (duplicates, some within one batch).
    cut = int(len(in_order) * 0.8)
    live, late = in_order[:cut], in_order[cut:]
    rng.shuffle(late)
    duplicates = rng.sample(ticks, 400)
    stream = live + late + duplicates + duplicates[:50]
    inserted = 0
    i = 0
    while i < len(stream):
        size = rng.choice([1, 7, 50, 333, 800])
        inserted += write_batch(storage, stream[i : i + size])
        i += size
    unique = {(t[0], t[1], t[4]) for t in ticks}
    assert inserted == len(unique)
    settle(storage)
    check_all_levels(storage)


def test_many_days_read_in_real_time_and_after_materialisation(storage: Engine) -> None:
    """Ticks over 30 days (30 chunks on TimescaleDB, so reads and refreshes aggregate chunk
    by chunk and combine partial first/last states): open/close equal brute force when
    read in real time from the ticks, after the aggregates are materialised, and after
    late ticks behind the materialisation watermark are refreshed."""
    rng = random.Random(11)
    ticks: list[Tick] = []
    for day in range(30):
        for _ in range(150):
            ts = T0 + timedelta(days=day, seconds=rng.randrange(0, 86_400))
            if ticks and rng.random() < 0.1:
                ts = ticks[-1][1]  # tie at the same instant
            ticks.append(
                (
                    rng.choice(["BTC-USD", "ETH-USD"]),
                    ts,
                    round(rng.uniform(10.0, 20.0), 4),
                    round(rng.uniform(0.0, 3.0), 3),
                    rng.choice(["b", "a", "ab", "B", "é", "a\\x"]),
                )
            )
    late = ticks[1::9]
    live = [t for i, t in enumerate(ticks) if i % 9 != 1]
    for j in range(0, len(live), 1000):
        write_batch(storage, live[j : j + 1000])
    check_all_levels(storage)  # real time: every level computed from the ticks
    settle(storage)
    check_all_levels(storage)  # materialised
    write_batch(storage, late)  # behind the watermark: visible once refreshed
    settle(storage)
    check_all_levels(storage)


def test_late_tick_corrects_closed_bars_at_every_level(storage: Engine) -> None:
    base = [
        ("BTC-USD", T0 + timedelta(minutes=1, seconds=10), 100.0, 1.0, "a"),
        ("BTC-USD", T0 + timedelta(minutes=1, seconds=50), 105.0, 1.0, "a"),
        ("BTC-USD", T0 + timedelta(hours=1, minutes=5), 110.0, 2.0, "a"),
    ]
    write_batch(storage, base)
    settle(storage)
    # A late tick earlier than everything (new open of minute, hour and day), a tie at the
    # close instant from a source that sorts later (new close), and a new low.
    late = [
        ("BTC-USD", T0 + timedelta(minutes=1, seconds=5), 90.0, 3.0, "a"),
        ("BTC-USD", T0 + timedelta(hours=1, minutes=5), 111.0, 1.0, "b"),
    ]
    write_batch(storage, late)
    settle(storage)
    check_all_levels(storage)
    day = read_bars(storage, "1d")[("BTC-USD", T0.replace(hour=0))]
    assert day[:4] == (90.0, 111.0, 90.0, 111.0)
    assert day[5] == 5


def test_concurrent_writers_lose_no_update(storage: Engine) -> None:
    rng = random.Random(7)
    ticks = random_ticks(rng, 4000)
    halves = [ticks[0::2], ticks[1::2]]
    errors: list[Exception] = []

    def writer(part: list[Tick]) -> None:
        try:
            for j in range(0, len(part), 200):
                write_batch(storage, part[j : j + 200])
        except Exception as exc:  # noqa: BLE001 - surfaced by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(h,)) for h in halves]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    settle(storage)
    check_all_levels(storage)
