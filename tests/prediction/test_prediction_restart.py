"""Killing the service (SIGKILL) mid-stream and restarting it loses no bar's forecast."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from prediction_helpers import (
    count_predictions,
    history_ticks,
    produce_ticks,
    store_ticks,
    wait_until,
)
from service_process import wait_serving
from sqlalchemy.engine import Engine

from services.common import infra
from services.common.config import Settings
from services.common.kafka import ensure_topics

SYMBOLS = ("KIL-A", "KIL-B", "KIL-C")
HOUR = timedelta(hours=1)
BARS = 16


def _spawn(s: Settings, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "DATABASE_URL": s.database_url,
        "REDIS_URL": s.redis_url,
        "KAFKA_BOOTSTRAP_SERVERS": s.kafka_bootstrap_servers,
        "PRICECAST_TOPIC_PRICES": s.topic_prices,
        "PRICECAST_TOPIC_PREDICTIONS": s.topic_predictions,
        "PRICECAST_TOPIC_MODEL_EVENTS": s.topic_model_events,
        "PRICECAST_CONSUMER_GROUP_PREDICTION": s.consumer_group_prediction,
        "PRICECAST_KAFKA_PARTITIONS": str(s.kafka_partitions),
        "PRICECAST_PREDICT_HEALTH_PORT": str(port),
        "PRICECAST_ENV": "test",
        "PRICECAST_LOG_LEVEL": "DEBUG",
    }
    out = log.open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "services.cli", "predict"], env=env, stdout=out, stderr=out
    )


def _forecasts(port: int) -> int:
    body = httpx.get(f"http://127.0.0.1:{port}/health/detailed", timeout=5).json()
    return int(body["prediction"]["forecasts_total"])


def _complete(engine: Engine, bars: list[datetime]) -> int:
    return sum(count_predictions(engine, sym, "1h", b) == 24 for sym in SYMBOLS for b in bars)


async def test_sigkill_mid_stream_then_restart_loses_nothing(
    isolated_settings: Settings, clean_db: Engine, tmp_path: Path
) -> None:
    s = isolated_settings
    await ensure_topics(s)
    h0 = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    bars = [h0 - (BARS - i) * HOUR for i in range(BARS)]
    for n, sym in enumerate(SYMBOLS):
        start = h0 - timedelta(days=35)
        store_ticks(clean_db, history_ticks(sym, start, bars[0] - HOUR, HOUR, seed=10 + n))

    def bar_ticks(i: int) -> list[tuple[str, datetime, float]]:
        return [
            (sym, bars[i] + timedelta(minutes=m), 100.0 + i + m / 100)
            for m in (1, 20, 40)
            for sym in SYMBOLS
        ]

    port = infra.free_port()
    log = tmp_path / "predict.log"
    proc = _spawn(s, port, log)
    try:
        await wait_serving(port, proc, "prediction service")
        # the first bar, until the consumer has joined its group and forecasts
        first = bar_ticks(0)
        store_ticks(clean_db, first)
        await produce_ticks(s, first)
        await wait_until(lambda: _forecasts(port) > 0, limit_s=60, what="first forecasts")
        # then bar after bar; kill the service once some (not all) bars are forecast
        sent = 1
        while sent < BARS and _complete(clean_db, bars) < len(SYMBOLS) * 3:
            ticks = bar_ticks(sent)
            store_ticks(clean_db, ticks)
            await produce_ticks(s, ticks)
            sent += 1
            await asyncio.sleep(0.2)
        done_before = _complete(clean_db, bars)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        assert 0 < done_before < len(SYMBOLS) * BARS, "the kill was not mid-stream"

        # the rest arrives while the service is down, then the closing ticks
        rest = [t for i in range(sent, BARS) for t in bar_ticks(i)]
        rest += [(sym, h0, 120.0) for sym in SYMBOLS]
        store_ticks(clean_db, rest)
        await produce_ticks(s, rest)

        second_run = log.stat().st_size
        proc = _spawn(s, port, log)
        await wait_serving(port, proc, "prediction service")
        deadline = asyncio.get_running_loop().time() + 60
        while _complete(clean_db, bars) < len(SYMBOLS) * BARS:
            assert asyncio.get_running_loop().time() < deadline, (
                f"only {_complete(clean_db, bars)} of {len(SYMBOLS) * BARS} bars forecast; "
                f"log:\n{log.read_text()[-3000:]}"
            )
            await asyncio.sleep(0.1)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    assert proc.returncode == 0, log.read_text()[-3000:]
    stopped = log.read_bytes()[second_run:].decode(errors="replace")
    assert "Traceback" not in stopped and "CancelledError" not in stopped, stopped[-3000:]
