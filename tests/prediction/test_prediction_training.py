"""``pricecast train`` / ``models rollback`` on real PostgreSQL and the Tansu broker."""

from __future__ import annotations

import argparse
import asyncio
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from ml_synthetic import FAST_LSTM, ar_prices
from sqlalchemy.engine import Engine

from ml import registry
from services.common.config import Settings
from services.common.kafka import ensure_topics, loads, make_consumer
from services.prediction.training import LOCK_KEY, rollback, run

START = datetime(2024, 1, 1, 12, tzinfo=UTC)


def load_daily(engine: Engine, symbol: str, closes: list[float]) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO assets (symbol) VALUES (:s)"), {"s": symbol})
        conn.execute(
            sa.text(
                "INSERT INTO price_ticks (symbol, ts, price, volume, source) "
                "VALUES (:s, :ts, :p, 1.0, 'test')"
            ),
            [
                {"s": symbol, "ts": START + timedelta(days=i), "p": float(p)}
                for i, p in enumerate(closes)
            ],
        )
        is_ts = conn.execute(
            sa.text("SELECT value FROM pricecast_meta WHERE key = 'storage_path'")
        ).scalar()
    if is_ts == "timescaledb":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
            for level in ("1m", "1h", "1d"):
                c.execute(
                    sa.text(
                        f"CALL refresh_continuous_aggregate('pricecast_cagg_{level}', NULL, NULL)"
                    )
                )


def args(**kw: object) -> argparse.Namespace:
    base: dict[str, object] = {"symbols": None, "pending": False, "interval": "1d"}
    base.update(kw)
    return argparse.Namespace(**base)


async def consume(settings: Settings, n: int) -> list[tuple[str, dict]]:
    consumer = make_consumer(settings, settings.topic_model_events, group_id="t-train")
    await consumer.start()
    out: list[tuple[str, dict]] = []
    try:
        while len(out) < n:
            batch = await consumer.getmany(timeout_ms=5000)
            if not batch:
                break
            for records in batch.values():
                out.extend((r.key.decode(), loads(r.value)) for r in records)
    finally:
        await consumer.stop()
    return out


@pytest.fixture
def market(clean_db: Engine) -> Engine:
    load_daily(clean_db, "AAA-USD", list(ar_prices(400, seed=31)))
    load_daily(clean_db, "BBB-USD", list(ar_prices(300, seed=32, sigma=0.02)))
    load_daily(clean_db, "NEW-USD", list(ar_prices(45, seed=33)))
    return clean_db


def test_train_promotes_publishes_and_is_safe_to_rerun(
    market: Engine, isolated_settings: Settings
) -> None:
    asyncio.run(ensure_topics(isolated_settings))
    lines: list[str] = []
    assert run(args(), isolated_settings, market, config=FAST_LSTM, progress=lines.append) == 0
    with market.connect() as conn:
        champ = registry.get_champion(conn, "lstm", "*", "1d")
    assert champ is not None and champ.version == 1, lines
    assert set(champ.metrics["per_series"]) == {"AAA-USD", "BBB-USD"}  # NEW-USD: 45 days
    assert champ.mase is not None and champ.mase < 0.98
    assert any("[1/2] AAA-USD" in line for line in lines)

    events = asyncio.run(consume(isolated_settings, 2))
    assert sorted(k for k, _ in events) == ["AAA-USD", "BBB-USD"]
    for key, event in events:
        assert event == {
            "type": "model_promoted",
            "symbol": key,
            "model": "lstm",
            "version": "lstm:*:1d:v1",
            "interval": "1d",
            "reason": event["reason"],
        }

    # Second run on the same data: same candidate, cannot beat the champion -> rejected.
    assert run(args(), isolated_settings, market, config=FAST_LSTM, progress=lines.append) == 0
    with market.connect() as conn:
        versions = registry.list_versions(conn, "lstm", "*", "1d")
    assert [(v.version, v.status) for v in versions] == [(1, "champion"), (2, "rejected")]


def test_pending_serves_queued_requests_and_the_lock_guards(
    market: Engine, isolated_settings: Settings
) -> None:
    quiet: list[str] = []
    assert run(args(pending=True), isolated_settings, market, progress=quiet.append) == 0
    assert "no queued retrain requests" in quiet
    with market.begin() as conn:
        rid = conn.execute(
            sa.text(
                "INSERT INTO retrain_requests (symbol, interval, reason) "
                "VALUES ('AAA-USD', '1d', 'accuracy degraded') RETURNING id"
            )
        ).scalar()
    with market.connect() as holder:
        holder.execute(sa.text("SELECT pg_advisory_lock(hashtext(:k))"), {"k": LOCK_KEY})
        holder.commit()
        lines: list[str] = []
        assert run(args(pending=True), isolated_settings, market, progress=lines.append) == 0
        assert any("holds the lock" in line for line in lines)
        holder.execute(sa.text("SELECT pg_advisory_unlock_all()"))
        holder.commit()
    offline = isolated_settings.model_copy(update={"kafka_bootstrap_servers": ""})
    assert run(args(pending=True), offline, market, config=FAST_LSTM, progress=lines.append) == 0
    with market.connect() as conn:
        status, details = conn.execute(
            sa.text("SELECT status, details FROM retrain_requests WHERE id = :i"), {"i": rid}
        ).one()
    assert status == "done" and details["result"].startswith("promoted")


def test_failure_exits_non_zero_and_marks_the_request_failed(
    market: Engine, isolated_settings: Settings
) -> None:
    with market.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO retrain_requests (symbol, interval, reason) VALUES (NULL, '1d', 'x')"
            )
        )
    broken = isolated_settings.model_copy(
        update={"kafka_bootstrap_servers": "127.0.0.1:1", "startup_wait_s": 0.5}
    )
    lines: list[str] = []
    assert run(args(pending=True), broken, market, config=FAST_LSTM, progress=lines.append) == 1
    with market.connect() as conn:
        assert conn.execute(sa.text("SELECT status FROM retrain_requests")).scalar() == "failed"


def test_rollback_restores_the_previous_champion(
    market: Engine, isolated_settings: Settings
) -> None:
    offline = isolated_settings.model_copy(update={"kafka_bootstrap_servers": ""})
    ns = argparse.Namespace(symbol="AAA-USD", model="lstm", interval="1d")
    assert rollback(ns, offline, market, progress=lambda _m: None) == 1  # nothing to roll back
    assert run(args(), offline, market, config=FAST_LSTM, progress=lambda _m: None) == 0
    with market.begin() as conn:
        champ = registry.get_champion(conn, "lstm", "*", "1d")
        assert champ is not None
        newer = registry.register_candidate(
            conn,
            model="lstm",
            scope="*",
            interval="1d",
            artifact=registry.load_artifact(conn, champ.id),
            metrics={"mase": 0.5},
        )
        registry.promote(conn, newer.id)
    out: list[str] = []
    assert rollback(ns, offline, market, progress=out.append) == 0
    with market.connect() as conn:
        restored = registry.get_champion(conn, "lstm", "*", "1d")
    assert restored is not None and restored.id == champ.id
    assert "restored lstm:*:1d:v1" in out[0]
