"""The writer as its own process, killed hard at chosen and random points, then restarted:
stored equals produced, nothing twice. SIGTERM finishes the batch and exits 0."""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from ingest_helpers import PRICECAST, count_ticks, service_env, wait_for
from service_process import wait_serving
from sqlalchemy.engine import Engine

from services.common import infra
from services.common.config import Settings
from services.common.schemas import Tick
from services.ingestion.backfill import writer_backlog
from services.ingestion.producer import TickPublisher

CRASHING = Path(__file__).with_name("crashing_writer.py")


@dataclass
class Writer:
    proc: subprocess.Popen[bytes]
    health_port: int


def spawn_writer(settings: Settings, log: Path, crash_at: str | None = None) -> Writer:
    """The writer as its own process; ``crash_at`` (``POINT:N``, :mod:`crashing_writer`)
    SIGKILLs it at the ``N``-th batch reaching ``POINT``."""
    port = infra.free_port()
    command = [*PRICECAST] if crash_at is None else [sys.executable, str(CRASHING), crash_at]
    proc = subprocess.Popen(
        [*command, "ingest", "--role", "writer"],
        env=service_env(
            settings,
            PRICECAST_WRITER_BATCH_SIZE="300",
            PRICECAST_INGEST_HEALTH_PORT=str(port),
        ),
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )
    return Writer(proc, port)


async def produce(publisher: TickPublisher, tag: str, n: int) -> int:
    t0 = datetime(2025, 2, 1, tzinfo=UTC)
    symbols = [f"K{tag}{i}-USD" for i in range(5)]
    batch = [
        Tick(symbols[i % 5], t0 + timedelta(milliseconds=i), 50.0 + (i % 7), 1.0, "test")
        for i in range(n)
    ]
    await publisher.publish(batch)
    return n


DUPLICATE_TICKS = sa.text(
    "SELECT count(*) FROM (SELECT symbol, ts, source FROM price_ticks"
    " GROUP BY 1, 2, 3 HAVING count(*) > 1) d"
)


def no_duplicates(engine: Engine) -> bool:
    with engine.connect() as conn:
        return conn.execute(DUPLICATE_TICKS).scalar_one() == 0


async def finish(writer: Writer, settings: Settings, engine: Engine, n: int) -> None:
    """Let a healthy writer catch up, then stop it with SIGTERM (must exit 0).

    The earlier writers of a test may have stored and committed everything already, so the
    new one is first waited for: a SIGTERM during the interpreter's start-up, before the
    service installs its handler, kills any Python process (-15)."""
    proc = writer.proc
    await wait_serving(writer.health_port, proc, "the writer")
    await wait_for(lambda: count_ticks(engine, "symbol LIKE 'K%'") == n, 60, f"{n} stored")
    await wait_for(lambda: _backlog_zero(settings), 30, "offsets committed")
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(proc.wait, 30) == 0


async def _backlog_zero(settings: Settings) -> bool:
    return await writer_backlog(settings) == 0


async def test_sigkill_after_db_commit_before_offset_commit(
    ing_settings: Settings, clean_db: Engine, publisher: TickPublisher, tmp_path: Path
) -> None:
    produced = await produce(publisher, "A", 3000)
    log = tmp_path / "writer.log"
    proc = spawn_writer(ing_settings, log, crash_at="after_db_commit:3").proc
    assert await asyncio.to_thread(proc.wait, 60) == -signal.SIGKILL, log.read_text()
    stored_at_crash = count_ticks(clean_db, "symbol LIKE 'K%'")
    assert stored_at_crash >= 3 * 1  # three batches committed in the database ...
    # ... but the last batch's offsets were not: it will be delivered again.
    assert await writer_backlog(ing_settings) > produced - stored_at_crash
    await finish(spawn_writer(ing_settings, log), ing_settings, clean_db, produced)
    assert count_ticks(clean_db, "symbol LIKE 'K%'") == produced
    assert no_duplicates(clean_db)
    assert "crash hook: SIGKILL at after_db_commit" in log.read_text()


async def test_sigkill_at_random_points_then_restart(
    ing_settings: Settings, clean_db: Engine, publisher: TickPublisher, tmp_path: Path
) -> None:
    rng = random.Random(20251122)
    log = tmp_path / "writer.log"
    produced = 0
    points = ["before_db_commit:2", "after_offset_commit:1", None, None]
    for round_, point in enumerate(points):
        produced += await produce(publisher, f"R{round_}", 2500)
        proc = spawn_writer(ing_settings, log, crash_at=point).proc
        if point:
            assert await asyncio.to_thread(proc.wait, 60) == -signal.SIGKILL
        else:
            # A kill at a random moment: while joining, consuming or writing.
            await asyncio.sleep(rng.uniform(1.0, 3.0))
            proc.kill()
            await asyncio.to_thread(proc.wait, 10)
        assert count_ticks(clean_db, "symbol LIKE 'K%'") <= produced
    await finish(spawn_writer(ing_settings, log), ing_settings, clean_db, produced)
    assert count_ticks(clean_db, "symbol LIKE 'K%'") == produced
    assert no_duplicates(clean_db)


async def test_sigterm_finishes_the_batch_commits_and_exits_zero(
    ing_settings: Settings, clean_db: Engine, publisher: TickPublisher, tmp_path: Path
) -> None:
    produced = await produce(publisher, "T", 20_000)
    log = tmp_path / "writer.log"
    proc = spawn_writer(ing_settings, log).proc
    await wait_for(lambda: count_ticks(clean_db, "symbol LIKE 'K%'") > 0, 60, "writing started")
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(proc.wait, 30) == 0, log.read_text()
    stored = count_ticks(clean_db, "symbol LIKE 'K%'")
    # Everything stored was committed and nothing committed is missing.
    assert await writer_backlog(ing_settings) == produced - stored
    assert "ingestion stopped" in log.read_text()
