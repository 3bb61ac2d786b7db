"""Backfill through the live path: N days give N distinct daily dates; twice is safe; CSV."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import sqlalchemy as sa
from ingest_helpers import PRICECAST, count_ticks, service_env, wait_for
from sqlalchemy.engine import Engine

from services.common.config import Settings
from services.ingestion.backfill import load_history, wait_until_stored


def distinct_days(engine: Engine, symbol: str) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                sa.text(
                    "SELECT count(DISTINCT (ts AT TIME ZONE 'UTC')::date) FROM price_ticks"
                    " WHERE symbol = :s"
                ),
                {"s": symbol},
            ).scalar_one()
        )


def daily_bars(engine: Engine, symbol: str) -> int | None:
    with engine.connect() as conn:
        if conn.execute(sa.text("SELECT to_regclass('price_1d')")).scalar() is None:
            return None
        return int(
            conn.execute(
                sa.text("SELECT count(*) FROM price_1d WHERE symbol = :s"), {"s": symbol}
            ).scalar_one()
        )


async def test_load_history_gives_exactly_n_days_and_is_safe_twice(
    ing_settings: Settings, clean_db: Engine, start_writer: object
) -> None:
    wanted = {"HIA-USD": 12, "HIB-USD": 1}
    published = await load_history(ing_settings, wanted)
    assert published > 0 and count_ticks(clean_db) == 0  # no writer yet: nothing stored
    await start_writer()  # type: ignore[operator]
    assert await wait_until_stored(ing_settings, 60)
    stored = count_ticks(clean_db)
    assert stored == published
    for symbol, days in wanted.items():
        assert distinct_days(clean_db, symbol) == days
        bars = daily_bars(clean_db, symbol)
        assert bars is None or bars == days
    again = await load_history(ing_settings, wanted)
    assert again >= published  # same grid, perhaps one more hour
    assert await wait_until_stored(ing_settings, 60)
    assert count_ticks(clean_db) == again


async def test_cli_csv_backfill_with_writer(
    ing_settings: Settings, clean_db: Engine, tmp_path: Path
) -> None:
    csv = tmp_path / "prices.csv"
    rows = ["date,close,volume"] + [f"2024-01-{d:02d},{100 + d},{10 * d}" for d in range(1, 31)]
    rows.append("2024-01-31,-5,1")  # rejected: negative price
    csv.write_text("\n".join(rows) + "\n")
    cmd = [*PRICECAST, "backfill", "--csv", str(csv), "--symbol", "CSV-USD", "--with-writer"]
    env = service_env(ing_settings)
    out = await asyncio.to_thread(
        subprocess.run, cmd, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert "published 30 ticks, rejected 1" in out.stdout
    await wait_for(lambda: count_ticks(clean_db, "symbol = 'CSV-USD'") == 30, 10, "csv stored")
    # Twice: nothing new stored.
    out = await asyncio.to_thread(
        subprocess.run, cmd, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert count_ticks(clean_db, "symbol = 'CSV-USD'") == 30


async def test_wait_until_stored_ends_while_a_live_feed_keeps_publishing(
    ing_settings: Settings, clean_db: Engine, start_writer: object, publisher: object
) -> None:
    """Issue 22: the wait is for what was published before it, not for an idle topic."""
    from datetime import UTC, datetime

    from services.ingestion.producer import TickPublisher

    assert isinstance(publisher, TickPublisher)
    await start_writer()  # type: ignore[operator]
    feeding = asyncio.Event()
    stop = asyncio.Event()

    async def live_feed() -> None:
        price = 100.0
        while not stop.is_set():
            tick = {
                "symbol": "LIVE-USD",
                "ts": datetime.now(UTC).isoformat(),
                "price": price,
                "volume": 1.0,
                "source": "synthetic",
            }
            await publisher.validate_and_publish([tick], "live")
            feeding.set()
            price += 0.01
            await asyncio.sleep(0.005)

    feed = asyncio.create_task(live_feed())
    try:
        await asyncio.wait_for(feeding.wait(), 20)
        published = await load_history(ing_settings, {"HIC-USD": 5})
        assert await wait_until_stored(ing_settings, 60)
        assert count_ticks(clean_db, "symbol = 'HIC-USD'") == published
        assert not feed.done()  # the feed ran throughout
    finally:
        stop.set()
        await feed
