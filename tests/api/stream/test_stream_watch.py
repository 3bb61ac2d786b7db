"""``pricecast watch``: prints predictions from the live stream, reconnects after the server
drops it, stops on a token that cannot work."""

from __future__ import annotations

import asyncio
import io
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from _api_helpers import add_asset, add_prediction
from _stream_helpers import RunningApi, publish_predictions, record, wait_for
from aiokafka import AIOKafkaProducer
from sqlalchemy.engine import Engine

from services.api.stream.protocol import CLOSE_SLOW
from services.api.stream.watch import Watcher, WatchError
from services.common.config import Settings

CHANNEL = "predictions:BTC-USD:1h"


async def test_watch_prints_snapshot_and_live_and_reconnects(
    api: RunningApi,
    kafka: AIOKafkaProducer,
    stream_settings: Settings,
    mint: Callable[..., str],
    clean_db: Engine,
    tmp_path: Path,
) -> None:
    add_asset(clean_db, "BTC-USD")
    add_prediction(clean_db, "BTC-USD", interval="1h", as_of=datetime(2026, 3, 1, tzinfo=UTC))
    token_file = tmp_path / "token"
    token_file.write_text(mint("predictions:read") + "\n")
    out = io.StringIO()
    watcher = Watcher(api.ws, token_file, CHANNEL, count=3, out=out)
    task = asyncio.create_task(watcher.run())
    try:
        await wait_for(lambda: watcher.printed == 1, 20, "the snapshot printed")
        for sub in list(api.stream.hub._subs):  # the server drops it (as a 4408 would)
            sub.kick(CLOSE_SLOW, "test")
        await wait_for(lambda: watcher.printed == 2, 30, "reconnected, snapshot again")
        assert watcher.reconnects == 1
        await publish_predictions(
            kafka, stream_settings.topic_predictions, [record("BTC-USD", "1h", 2, price=77.0)]
        )
        await asyncio.wait_for(task, 30)
    finally:
        task.cancel()
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    assert "BTC-USD 1h h=1" in lines[0] and "arima" in lines[0]
    assert "h=2" in lines[2] and "77" in lines[2]


async def test_watch_stops_on_a_token_without_the_scope(
    api: RunningApi, mint: Callable[..., str], tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(mint("prices:read"))
    watcher = Watcher(api.ws, token_file, CHANNEL, count=1, out=io.StringIO())
    with pytest.raises(WatchError, match="scope"):
        await asyncio.wait_for(watcher.run(), 30)
    token_file.write_text("not-a-token")
    with pytest.raises(WatchError, match="token refused"):
        await asyncio.wait_for(watcher.run(), 30)


async def test_watch_command_line(
    api: RunningApi, mint: Callable[..., str], clean_db: Engine, tmp_path: Path
) -> None:
    add_asset(clean_db, "ETH-USD")
    add_prediction(clean_db, "ETH-USD", interval="1d", as_of=datetime(2026, 3, 1, tzinfo=UTC))
    token_file = tmp_path / "token"
    token_file.write_text(mint("predictions:read"))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.cli",
        "watch",
        "eth-usd",
        "--url",
        api.ws,
        "--token-file",
        str(token_file),
        "--json",
        "--count",
        "1",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, stderr.decode()
    assert '"symbol":"ETH-USD"' in stdout.decode()
