"""Kafka failure modes: broker down, misadvertised listener, missing topics, consumer lag."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from services.common import infra
from services.common.config import Settings
from services.common.kafka import ensure_topics, make_consumer
from services.doctor.show import lag_table, topics_table

Diagnose = Callable[..., dict[str, Any]]


def test_closed_port_broker_is_unreachable(
    isolated_settings: Settings, diagnose_map: Diagnose
) -> None:
    port = infra.free_port()
    settings = isolated_settings.model_copy(update={"kafka_bootstrap_servers": f"127.0.0.1:{port}"})
    found = diagnose_map(settings, "kafka")
    broker = found["kafka.broker"]
    assert broker.status == "fail"
    assert f"127.0.0.1:{port}" in broker.evidence and "refused" in broker.evidence.lower()
    assert "start Kafka" in broker.fix and "KAFKA_BOOTSTRAP_SERVERS" in broker.fix
    assert [
        found[n].status for n in ("kafka.advertised", "kafka.topics", "kafka.consumer_lag")
    ] == ["skip"] * 3


@pytest.fixture
def misadvertised_broker() -> Iterator[tuple[int, int]]:
    """A Tansu broker listening on one port but advertising another, where nothing listens."""
    port, bad = infra.free_port(), infra.free_port()
    proc = infra.spawn(
        [
            infra.tansu_binary(),
            "broker",
            "--listener-url",
            f"tcp://127.0.0.1:{port}",
            "--advertised-listener-url",
            f"tcp://127.0.0.1:{bad}",
            "--storage-engine",
            "memory://tansu/",
        ]
    )
    infra.wait_tcp("127.0.0.1", port, 20, proc)
    yield port, bad
    infra.stop_process(proc)


def test_misadvertised_listener(
    isolated_settings: Settings, misadvertised_broker: tuple[int, int], diagnose_map: Diagnose
) -> None:
    port, bad = misadvertised_broker
    settings = isolated_settings.model_copy(update={"kafka_bootstrap_servers": f"127.0.0.1:{port}"})
    found = diagnose_map(settings, "kafka")
    assert found["kafka.broker"].status == "ok"
    adv = found["kafka.advertised"]
    assert adv.status == "fail"
    assert f"127.0.0.1:{bad}" in adv.evidence and f"127.0.0.1:{port} answered" in adv.evidence
    assert "advertised.listeners" in adv.fix
    assert found["kafka.topics"].status == "skip"


def test_missing_topics(isolated_settings: Settings, diagnose_map: Diagnose) -> None:
    topics = diagnose_map(isolated_settings, "kafka.topics")["kafka.topics"]
    assert topics.status == "fail"
    assert isolated_settings.topic_prices in topics.evidence
    assert "kafka-topics.sh --create" in topics.fix and "Tansu" in topics.fix


async def _produce(settings: Settings, n: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        for i in range(n):
            await producer.send(settings.topic_prices, b'{"p": 1}', key=f"S{i % 7}".encode())
        await producer.flush()
    finally:
        await producer.stop()


async def _consume_and_commit(settings: Settings, group: str, n: int) -> None:
    consumer = make_consumer(settings, settings.topic_prices, group_id=group)
    await consumer.start()
    try:
        seen = 0
        deadline = time.monotonic() + 20
        while seen < n and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            seen += sum(len(v) for v in batch.values())
        await consumer.commit()
    finally:
        await consumer.stop()


def test_stalled_writer_builds_lag(isolated_settings: Settings, diagnose_map: Diagnose) -> None:
    settings = isolated_settings.model_copy(update={"doctor_lag_warn": 10, "doctor_lag_fail": 1000})
    asyncio.run(ensure_topics(settings))
    asyncio.run(_produce(settings, 50))
    lag = diagnose_map(settings, "kafka.consumer_lag")["kafka.consumer_lag"]
    assert lag.status == "warn"
    writer, predictor = settings.consumer_group_writer, settings.consumer_group_prediction
    assert f"{writer} 50 behind, nothing committed" in lag.evidence
    assert lag.data[writer]["lag"] == 50 and lag.data[predictor]["lag"] == 50
    assert "price-consumer" in lag.fix

    asyncio.run(_consume_and_commit(settings, writer, 50))
    after = diagnose_map(settings, "kafka.consumer_lag")["kafka.consumer_lag"]
    assert after.data[writer]["lag"] == 0 and after.data[writer]["committed_any"]
    assert after.data[predictor]["lag"] == 50
    assert after.status == "warn"

    failing = settings.model_copy(update={"doctor_lag_fail": 40})
    assert diagnose_map(failing, "kafka.consumer_lag")["kafka.consumer_lag"].status == "fail"

    table = lag_table(settings, 5.0)
    assert writer in table and predictor in table and "total" in table
    listing = topics_table(settings, 5.0)
    assert settings.topic_prices in listing and " 50 " in listing


def test_healthy_kafka(isolated_settings: Settings, diagnose_map: Diagnose) -> None:
    asyncio.run(ensure_topics(isolated_settings))
    found = diagnose_map(isolated_settings, "kafka")
    assert {n: f.status for n, f in found.items()} == dict.fromkeys(
        ("kafka.broker", "kafka.advertised", "kafka.topics", "kafka.consumer_lag"), "ok"
    ), found


def test_hung_broker_costs_at_most_the_timeout(
    isolated_settings: Settings, silent_listener: int, diagnose_map: Diagnose
) -> None:
    settings = isolated_settings.model_copy(
        update={
            "kafka_bootstrap_servers": f"127.0.0.1:{silent_listener}",
            "doctor_check_timeout_s": 1.0,
        }
    )
    start = time.monotonic()
    broker = diagnose_map(settings, "kafka")["kafka.broker"]
    assert time.monotonic() - start < 3.0
    assert broker.status == "fail"
