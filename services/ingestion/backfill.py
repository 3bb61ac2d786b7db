"""``pricecast backfill``: history through the same validation and Kafka path as live data.

``--synthetic --symbols A B --days N`` publishes the synthetic model's ticks for the last N
calendar days (UTC), today included, so the daily bars come out with exactly N distinct days;
``--csv FILE --symbol S`` replays a price file; ``--venue KIND --pair VENUE:SYMBOL --since T``
loads trades from an exchange's REST endpoint (:mod:`services.ingestion.venue_backfill`). Ticks
go to ``prices``; the writer stores them (``--with-writer`` runs one in this process). Once
they are stored, the bars of history older than the TimescaleDB refresh window are materialised
right away (no-op on the plain path). Safe to run twice: the ticks have fixed timestamps and
values, the writer stores each natural key once, and ticks older than what retention already
deleted (``pricecast_meta.ticks_dropped_before``) are ignored on both storage paths, so a
deleted tick loaded again is not counted in its bar twice (nor is history older than that
horizon loaded at all).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from itertools import islice
from pathlib import Path
from typing import Any, TextIO

import sqlalchemy as sa

from services.common.config import Settings, get_settings
from services.common.offsets import behind, end_offsets, group_backlog
from services.ingestion.producer import TickPublisher
from services.ingestion.sources.base import RawTick
from services.ingestion.sources.csv_replay import read_rows
from services.ingestion.sources.synthetic import history
from services.storage.materialize import materialize_backfill_for

log = logging.getLogger(__name__)

CHUNK = 5000


class Progress:
    """A one-line progress bar on a terminal (plain lines otherwise)."""

    def __init__(self, total: int | None, label: str, out: TextIO = sys.stderr) -> None:
        self.total = total
        self.label = label
        self.out = out
        self.done = 0
        self.rejected = 0
        self.started = time.monotonic()
        self._tty = out.isatty()
        self._last = 0.0

    def update(self, done: int, rejected: int) -> None:
        self.done += done
        self.rejected += rejected
        now = time.monotonic()
        if self._tty and now - self._last > 0.1:
            self._last = now
            self.out.write("\r" + self.line())
            self.out.flush()

    def line(self) -> str:
        rate = self.done / max(1e-9, time.monotonic() - self.started)
        if self.total:
            frac = min(1.0, (self.done + self.rejected) / self.total)
            bar = "#" * int(frac * 30)
            return (
                f"{self.label} [{bar:<30}] {frac:6.1%} {self.done} published,"
                f" {self.rejected} rejected, {rate:,.0f}/s"
            )
        return f"{self.label} {self.done} published, {self.rejected} rejected, {rate:,.0f}/s"

    def close(self) -> None:
        self.out.write(("\r" if self._tty else "") + self.line() + "\n")
        self.out.flush()


def _count_rows(path: Path) -> int:
    with path.open(encoding="utf-8") as lines_in:
        return max(0, sum(1 for _ in lines_in) - 1)


def history_start(now: datetime, days: int) -> datetime:
    """Midnight UTC of the first of the last ``days`` calendar days (today is one of them)."""
    if days < 1:
        raise ValueError("days must be >= 1")
    today = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return today - timedelta(days=days - 1)


def synthetic_ticks(
    symbol_days: dict[str, int], now: datetime, step_minutes: int, seed: int
) -> Iterator[RawTick]:
    step = timedelta(minutes=step_minutes)
    for symbol, days in symbol_days.items():
        yield from history(symbol, history_start(now, days), now, step, seed)


def count_synthetic(symbol_days: dict[str, int], now: datetime, step_minutes: int) -> int:
    step_s = step_minutes * 60
    return sum(
        int((now - history_start(now, days)).total_seconds() // step_s) + 1
        for days in symbol_days.values()
    )


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


async def publish_all(
    publisher: TickPublisher, ticks: Iterable[RawTick], progress: Progress | None = None
) -> tuple[int, int]:
    published = rejected = 0
    for chunk in _chunks(ticks, CHUNK):
        good, bad = await publisher.validate_and_publish(chunk, "backfill")
        published += len(good)
        rejected += len(bad)
        if progress is not None:
            progress.update(len(good), len(bad))
    return published, rejected


async def _started_publisher(settings: Settings) -> TickPublisher:
    publisher = TickPublisher(settings)
    if not await asyncio.wait_for(publisher.start(), settings.startup_wait_s):
        raise RuntimeError("broker not reachable")
    return publisher


async def load_history(
    settings: Settings, symbol_days: dict[str, int], step_minutes: int = 60, seed: int = 42
) -> int:
    """Publish validated synthetic history ending now; returns the ticks published.

    For N days a symbol gets ticks on N distinct UTC dates (today included). The writer
    stores them; :func:`wait_until_stored` tells when it has.
    """
    publisher = await _started_publisher(settings)
    try:
        now = datetime.now(UTC)
        published, rejected = await publish_all(
            publisher, synthetic_ticks(symbol_days, now, step_minutes, seed)
        )
        if rejected:
            log.warning("history: %d synthetic ticks rejected by validation", rejected)
        return published
    finally:
        await publisher.stop()


async def writer_backlog(settings: Settings) -> int:
    """Messages on ``prices`` not yet committed (so not yet stored) by the writer group."""
    return await group_backlog(settings, settings.consumer_group_writer, settings.topic_prices)


async def wait_until_stored(settings: Settings, timeout_s: float = 600.0) -> bool:
    """True once the writer group has committed (so stored) everything published on
    ``prices`` before this call: the end offsets are taken now and the wait is for the group
    to pass them, not for an idle topic, which a running live feed never leaves."""
    targets = await end_offsets(settings, settings.topic_prices)
    deadline = time.monotonic() + timeout_s
    while True:
        if await behind(settings, settings.consumer_group_writer, targets) == 0:
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.5)


async def _materialize(settings: Settings) -> None:
    """TimescaleDB: materialise the bars of the history just stored below the refresh window
    now (:func:`services.storage.materialize.materialize_backfill_for`) instead of at the
    database job's next run (within 10 minutes). Plain path: a no-op (one short connection;
    the bars were maintained on insert). A failure is reported, not fatal: the ticks are
    stored and the job materialises them."""
    try:
        days = await asyncio.to_thread(materialize_backfill_for, settings)
    except sa.exc.SQLAlchemyError as exc:
        print(
            f"bars not materialised yet ({exc.__class__.__name__}); the database job"
            " pricecast_storage_job will do it",
            file=sys.stderr,
        )
        return
    if days:
        print(f"materialised bars of {days} day(s)")


async def publish_pages(
    publisher: TickPublisher, pages: AsyncIterator[list[RawTick]], progress: Progress
) -> tuple[int, int]:
    published = rejected = 0
    async for page in pages:
        good, bad = await publisher.validate_and_publish(page, "backfill")
        published += len(good)
        rejected += len(bad)
        progress.update(len(good), len(bad))
    return published, rejected


async def run_backfill(settings: Settings, args: argparse.Namespace) -> int:
    seed = args.seed if args.seed is not None else settings.synthetic_seed
    now = datetime.now(UTC)
    ticks: Iterable[RawTick] = ()
    pages: AsyncIterator[list[RawTick]] | None = None
    if getattr(args, "venue", None):
        from services.ingestion.venue_backfill import parse_time, venue_history

        since = parse_time(args.since)
        until = parse_time(args.until) if args.until else now
        pages = venue_history(settings, args.venue, args.pair, since, until)
        total = None
        label = f"{args.venue} {args.pair} {since:%Y-%m-%d %H:%M} .. {until:%Y-%m-%d %H:%M}"
    elif args.csv:
        path = Path(args.csv)
        total = await asyncio.to_thread(_count_rows, path)
        handle = path.open(newline="", encoding="utf-8")  # noqa: ASYNC230 - read lazily
        ticks = read_rows(handle, args.symbol, source="csv")
        label = f"{path.name}"
    else:
        symbols = args.symbols or settings.symbols()
        symbol_days = dict.fromkeys(symbols, args.days)
        total = count_synthetic(symbol_days, now, args.step_minutes)
        ticks = synthetic_ticks(symbol_days, now, args.step_minutes, seed)
        label = f"synthetic {len(symbols)} symbols x {args.days} days"

    stop = asyncio.Event()
    writer_task: asyncio.Task[int] | None = None
    if args.with_writer:
        from services.ingestion.service import run_ingestion

        writer_task = asyncio.create_task(
            run_ingestion(settings, "writer", stop, install_signals=False, health=False)
        )
    publisher = await _started_publisher(settings)
    progress = Progress(total, label)
    try:
        if pages is not None:
            published, rejected = await publish_pages(publisher, pages, progress)
        else:
            published, rejected = await publish_all(publisher, ticks, progress)
    finally:
        progress.close()
        await publisher.stop()
    print(f"published {published} ticks, rejected {rejected} (see {settings.topic_prices_dlq})")
    code = 0
    if not args.no_wait:
        print("waiting for the writer to store them ...", file=sys.stderr)
        if await wait_until_stored(settings, args.wait_timeout):
            print("stored")
            await _materialize(settings)
        else:
            print(
                "the writer has not caught up: is `pricecast ingest` (writer) running?",
                file=sys.stderr,
            )
            code = 1
    if writer_task is not None:
        stop.set()
        code = code or await writer_task
    return code


def main(args: argparse.Namespace) -> int:
    venue = getattr(args, "venue", None)
    if not args.csv and not args.synthetic and not venue:
        print(
            "backfill needs --csv FILE --symbol S, --synthetic, or --venue KIND --pair"
            " VENUE:SYMBOL --since T",
            file=sys.stderr,
        )
        return 2
    if venue and (not args.pair or not args.since):
        print("--venue needs --pair venue-symbol:SYMBOL and --since", file=sys.stderr)
        return 2
    if args.csv and not Path(args.csv).is_file():
        print(f"no such file: {args.csv}", file=sys.stderr)
        return 2
    settings = get_settings()
    if not settings.kafka_configured:
        print(
            "KAFKA_BOOTSTRAP_SERVERS is not set: backfill publishes to the broker the writer"
            " reads from",
            file=sys.stderr,
        )
        return 2
    return asyncio.run(run_backfill(settings, args))
