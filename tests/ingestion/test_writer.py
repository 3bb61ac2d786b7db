"""The writer against the real broker and PostgreSQL: idempotence, DLQ, rebalance."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import sqlalchemy as sa
from ingest_helpers import count_ticks, decode_value, read_topic, wait_for
from sqlalchemy.engine import Engine

from services.common.config import Settings
from services.common.schemas import Tick
from services.ingestion.producer import TickPublisher


def ticks(symbol: str, n: int, start: datetime | None = None) -> list[Tick]:
    t0 = start or datetime(2025, 1, 1, tzinfo=UTC)
    return [
        Tick(symbol, t0 + timedelta(seconds=i), 100.0 + i * 0.01, 1.0, "test") for i in range(n)
    ]


async def test_same_tick_twice_is_stored_once(
    ing_settings: Settings, clean_db: Engine, publisher: TickPublisher, start_writer: Any
) -> None:
    batch = ticks("DUP-USD", 50)
    await publisher.publish(batch)
    await publisher.publish(batch[:20])  # delivered again, later
    await publisher.publish(batch[:5] + batch[:5])  # and twice within one message batch
    w = await start_writer()
    await wait_for(lambda: w.writer.stats.consumed == 80, what="80 records consumed")
    assert count_ticks(clean_db, "symbol = 'DUP-USD'") == 50
    assert w.writer.stats.stored == 50 and w.writer.stats.duplicates == 30
    with clean_db.connect() as conn:
        first_seen = conn.execute(
            sa.text("SELECT first_seen FROM assets WHERE symbol = 'DUP-USD'")
        ).scalar_one()
    assert first_seen == batch[0].ts


async def test_each_bad_input_lands_in_the_dlq_and_later_ticks_are_stored(
    ing_settings: Settings, clean_db: Engine, publisher: TickPublisher, start_writer: Any
) -> None:
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    good = {
        "symbol": "POI-USD",
        "ts": "2025-01-01T00:00:00Z",
        "price": 10.0,
        "volume": 1.0,
        "source": "test",
    }
    bad: list[tuple[bytes, str]] = [
        (b"{this is not json", "invalid_json"),
        (orjson.dumps({**good, "price": -5.0}), "non_positive_price"),
        (orjson.dumps({**good, "volume": 0}), "non_positive_volume"),
        (orjson.dumps({**good, "price": "NaN"}), "non_finite_price"),
        (orjson.dumps({k: v for k, v in good.items() if k != "price"}), "missing_field"),
        (orjson.dumps({**good, "ts": future}), "future_timestamp"),
        (orjson.dumps({"hello": "world"}), "unknown_shape"),
        (orjson.dumps([1, 2, 3]), "unknown_shape"),
    ]
    # Straight onto `prices` (as a buggy or hostile producer would), all on one partition,
    # each followed by a good tick.
    items: list[tuple[bytes | None, bytes]] = []
    for i, (payload, _) in enumerate(bad):
        items.append((b"POI-USD", payload))
        items.append((b"POI-USD", orjson.dumps({**good, "ts": f"2025-01-01T00:00:{i:02d}Z"})))
    await publisher.send_keyed(ing_settings.topic_prices, items)
    w = await start_writer()
    await wait_for(
        lambda: count_ticks(clean_db, "symbol = 'POI-USD'") == len(bad), what="good ticks"
    )
    dlq = [
        decode_value(r)
        for r in await read_topic(ing_settings, ing_settings.topic_prices_dlq, len(bad))
    ]
    assert sorted(d["reason"] for d in dlq) == sorted(reason for _, reason in bad)
    by_payload = {d["payload"]: d for d in dlq}
    for payload, reason in bad:
        record = by_payload[payload.decode()]
        assert record["reason"] == reason and record["stage"] == "writer" and record["detail"]
        assert record["origin"]["topic"] == ing_settings.topic_prices
        assert record["origin"]["offset"] >= 0
    await wait_for(lambda: w.writer.stats.consumed == 2 * len(bad), what="all consumed")
    assert w.writer.stats.dead_lettered == len(bad)


async def test_publish_side_rejects_go_to_the_dlq_and_are_not_published(
    ing_settings: Settings, publisher: TickPublisher
) -> None:
    good, bad = await publisher.validate_and_publish(
        [
            {
                "symbol": "PUB-USD",
                "ts": "2025-01-01T00:00:00Z",
                "price": 1.0,
                "volume": 1.0,
                "source": "t",
            },
            {
                "symbol": "PUB-USD",
                "ts": "2025-01-01T00:00:01Z",
                "price": -1.0,
                "volume": 1.0,
                "source": "t",
            },
            {
                "symbol": "PUB-USD",
                "ts": "2025-01-01T00:00:02Z",
                "price": 9.0,
                "volume": 1.0,
                "source": "t",
            },
        ],
        source="t",
    )
    assert len(good) == 1 and [b.reason for b in bad] == ["non_positive_price", "price_jump"]
    dlq = [
        decode_value(r) for r in await read_topic(ing_settings, ing_settings.topic_prices_dlq, 2)
    ]
    assert {d["reason"] for d in dlq} == {"non_positive_price", "price_jump"}
    assert all(d["stage"] == "publish" and d["origin"] is None for d in dlq)
    prices = await read_topic(ing_settings, ing_settings.topic_prices, 1, timeout_s=3)
    assert len(prices) == 1 and prices[0].key == b"PUB-USD"


async def test_a_rebalance_loses_nothing(
    ing_settings: Settings, clean_db: Engine, publisher: TickPublisher, start_writer: Any
) -> None:
    settings = ing_settings.model_copy(update={"writer_batch_size": 200})
    symbols = [f"RB{i}-USD" for i in range(12)]
    produced = 0
    first = await start_writer(settings)
    for round_ in range(6):
        for s in symbols:
            await publisher.publish(ticks(s, 100, datetime(2025, 1, 1 + round_, tzinfo=UTC)))
            produced += 100
        if round_ == 1:
            second = await start_writer(settings)  # joins: partitions move
        if round_ == 3:
            await first.close()  # leaves: partitions move back
        await asyncio.sleep(0.3)
    await wait_for(lambda: count_ticks(clean_db, "symbol LIKE 'RB%'") == produced, 60, "all stored")
    await asyncio.sleep(0.5)
    assert count_ticks(clean_db, "symbol LIKE 'RB%'") == produced
    assert second.writer.stats.consumed > 0 and first.writer.stats.consumed > 0
    assert second.writer.stats.consumed + first.writer.stats.consumed >= produced
