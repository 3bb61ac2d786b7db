"""The prediction consumer after the in-memory broker lost its log (issue 10, broker_restart).

The broker (Tansu, in-memory) is killed and restarted on the same port while a batch is in
flight: the engine is waiting for the writer to store the tick that closed a bar. The group
re-joins the new, empty log; then the batch fails (the database goes away for a moment). The
failed batch's offsets belong to the old log and lie beyond the end of the new one: seeking
back to them left the consumer waiting there (Tansu answers such a fetch with no records and
no ``OFFSET_OUT_OF_RANGE``), and every bar closed on the new broker went without forecasts.
The consumer must instead drop offsets taken under an older assignment and forecast every bar
that closes after the restart, without help from the watchdog.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from prediction_helpers import (
    count_predictions,
    history_ticks,
    produce_ticks,
    store_ticks,
    wait_until,
)
from sqlalchemy.engine import Engine, make_url

from services.common import infra
from services.common.config import Settings
from services.common.kafka import ensure_topics
from services.prediction.service import PredictionService

SYMBOLS = ("BRR-A", "BRR-B")
HOUR = timedelta(hours=1)
FILLER = 150  # ticks per symbol inside one bar: old-log offsets far beyond the new log's end


@pytest.fixture
def restartable_broker() -> Iterator[infra.Broker]:
    """A broker of this test's own (the session's is shared): killed and restarted here."""
    broker = infra.start_tansu()
    yield broker
    broker.stop()  # the live instance: the test swaps ``proc`` when it restarts the broker


def _bar_ticks(bar: datetime) -> list[tuple[str, datetime, float]]:
    return [
        (sym, bar + timedelta(minutes=m), 100.0 + n + m / 100)
        for m in (1, 20, 40)
        for n, sym in enumerate(SYMBOLS)
    ]


def _complete(engine: Engine, bars: list[datetime]) -> int:
    return sum(count_predictions(engine, sym, "1h", b) == 24 for sym in SYMBOLS for b in bars)


def _block_database(url: str, blocked: bool) -> None:
    """Refuse (or allow again) every connection to this session's own database, and end the
    open ones: what the services see when the database host goes away."""
    target = make_url(url)
    admin = sa.create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(
                sa.text(f'ALTER DATABASE "{target.database}" ALLOW_CONNECTIONS {not blocked!s}')
            )
            if blocked:
                conn.execute(
                    sa.text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = :d AND pid <> pg_backend_pid()"
                    ),
                    {"d": target.database},
                )
    finally:
        admin.dispose()


async def test_prediction_consumer_forecasts_after_the_broker_lost_its_log(
    restartable_broker: infra.Broker,
    run_service: Callable[..., Awaitable[PredictionService]],
    isolated_settings: Settings,
    clean_db: Engine,
) -> None:
    s = isolated_settings.model_copy(
        update={"kafka_bootstrap_servers": restartable_broker.bootstrap}
    )
    await ensure_topics(s)
    h0 = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    bars = [h0 - (10 - i) * HOUR for i in range(9)]  # h0-10h .. h0-2h
    for n, sym in enumerate(SYMBOLS):
        store_ticks(clean_db, history_ticks(sym, h0 - timedelta(days=35), bars[0] - HOUR, HOUR, n))

    service = await run_service(s)
    consumer, engine = service.consumer, service.engine
    assert consumer is not None and engine is not None

    # Old broker: three bars (two of them closed and forecast), then many ticks in the third.
    for bar in bars[:3]:
        ticks = _bar_ticks(bar)
        store_ticks(clean_db, ticks)
        await produce_ticks(s, ticks)
    filler = [
        (sym, bars[2] + timedelta(minutes=41, milliseconds=100 * i), 101.0)
        for i in range(FILLER)
        for sym in SYMBOLS
    ]
    store_ticks(clean_db, filler)
    await produce_ticks(s, filler)
    await wait_until(lambda: _complete(clean_db, bars[:2]) == 4, 90, "the first forecasts")

    # A batch in flight: bars[3] closes bars[2], but the writer has not stored it yet.
    await produce_ticks(s, _bar_ticks(bars[3]))
    await wait_until(lambda: bool(engine.waiting), 30, "the engine to wait")

    # The broker loses its log; the group re-joins the new one (revoked + assigned).
    generation = consumer.generation
    restartable_broker.proc.kill()
    restartable_broker.proc.wait(10)
    await asyncio.sleep(1.0)
    restarted = infra.start_tansu(port=restartable_broker.port)
    restartable_broker.proc = restarted.proc  # the fixture stops the live one
    await ensure_topics(s)
    await wait_until(lambda: consumer.generation >= generation + 2, 60, "the group to re-join")

    # Now the batch of the old log fails.
    failures = consumer.failures
    await asyncio.to_thread(_block_database, s.database_url, True)
    try:
        await wait_until(lambda: consumer.failures > failures, 30, "the batch to fail")
    finally:
        await asyncio.to_thread(_block_database, s.database_url, False)
    clean_db.dispose()

    # New broker: the writer catches up and bars keep closing; all must be forecast.
    for bar in bars[3:]:
        ticks = _bar_ticks(bar)
        store_ticks(clean_db, ticks)
        await produce_ticks(s, ticks)
    closing = [(sym, h0 - HOUR, 120.0) for sym in SYMBOLS]
    store_ticks(clean_db, closing)
    await produce_ticks(s, closing)
    wanted = len(SYMBOLS) * (len(bars) - 2)
    await wait_until(
        lambda: _complete(clean_db, bars[2:]) == wanted, 90, "forecasts of the new log's bars"
    )
    assert consumer.stale_batches >= 1
    # The root fix, not the watchdog, kept the consumer in the new log.
    assert consumer.watchdog is not None and consumer.watchdog.resets == 0
