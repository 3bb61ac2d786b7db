"""The shared fixtures and infrastructure helpers work against the real services."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from services.common import infra
from services.common.config import Settings
from services.common.kafka import (
    consumer_lag,
    dumps,
    ensure_topics,
    loads,
    make_consumer,
    make_producer,
)


def test_migrated_database_has_core_tables(engine: Engine) -> None:
    with engine.connect() as conn:
        tables = set(
            conn.execute(
                sa.text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            ).scalars()
        )
    assert {"assets", "price_ticks", "predictions", "model_versions", "api_clients"} <= tables


def test_tansu_broker_round_trip_with_committed_offsets(isolated_settings: Settings) -> None:
    s = isolated_settings

    async def scenario() -> tuple[list[dict[str, object]], int]:
        await ensure_topics(s)
        producer = make_producer(s)
        await producer.start()
        for i in range(10):
            await producer.send_and_wait(s.topic_prices, dumps({"i": i}), key=b"BTC-USD")
        await producer.stop()
        consumer = make_consumer(s, s.topic_prices, group_id=s.consumer_group_writer)
        await consumer.start()
        got: list[dict[str, object]] = []
        while len(got) < 10:
            batch = await consumer.getmany(timeout_ms=2000)
            for records in batch.values():
                got.extend(loads(r.value) for r in records)
        await consumer.commit()
        lag = await consumer_lag(consumer)
        await consumer.stop()
        return got, lag

    got, lag = asyncio.run(scenario())
    assert [g["i"] for g in got] == list(range(10))
    assert lag == 0


def test_started_processes_stop_with_infra() -> None:
    broker = infra.start_tansu()
    assert infra.tcp_answers("127.0.0.1", broker.port)
    broker.stop()
    assert broker.proc.poll() is not None
    assert not infra.tcp_answers("127.0.0.1", broker.port)


def test_resolve_reuses_answering_services_and_starts_kafka(settings: Settings) -> None:
    unconfigured = settings.model_copy(update={"kafka_bootstrap_servers": ""})
    with infra.resolved(unconfigured) as found:
        assert found.started == ["kafka (tansu, in-memory)"]
        assert found.settings.database_url == settings.database_url
        assert infra.kafka_answers(found.settings.kafka_bootstrap_servers)
        port = int(found.settings.kafka_bootstrap_servers.rsplit(":", 1)[1])
    assert not infra.tcp_answers("127.0.0.1", port)
