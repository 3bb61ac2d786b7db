"""Benchmark ``ingest_e2e``: ticks/s from the producer through Kafka into ``price_ticks``.

The publisher (validation + keyed batches, as every source uses it) runs in this process; the
writer runs as its own process (``pricecast ingest --role writer``), as deployed. The clock runs
from the first publish until the last tick is committed in PostgreSQL. Baseline, same run,
same table (indexes and bar trigger included): one raw ``COPY`` of the same rows into
``price_ticks``, the fastest a client can put them there. Both are measured with the storage
layer's bar trigger enabled (the headline, one writer) and disabled (``extra``), when the
trigger exists. ``extra.two_writers``: the same with two writer processes in the consumer group
(the base Kubernetes Deployment runs two replicas), against the headline's baseline.

``extra.*.writer_cpu_us_per_tick`` is the CPU time the writer process(es) used while the clock
ran, per tick; ``extra.loadavg`` the 1-minute load average at the start and the end: the
machine is shared, and wall-clock rates move with its load.

Environment: ``INGEST_BENCH_TICKS`` (default 1,000,000), ``INGEST_BENCH_SYMBOLS`` (100),
``INGEST_BENCH_TWO_WRITERS`` (1; 0 skips that run).
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from bench.common import bench_settings, write_result
from services.common import infra
from services.common.config import Settings
from services.common.kafka import ensure_topics
from services.ingestion.producer import TickPublisher, partition_for

TICKS = int(os.environ.get("INGEST_BENCH_TICKS", "1000000"))
SYMBOLS = int(os.environ.get("INGEST_BENCH_SYMBOLS", "100"))
TWO_WRITERS = os.environ.get("INGEST_BENCH_TWO_WRITERS", "1") != "0"
CHUNK = 20_000
T0 = datetime(2025, 1, 1, tzinfo=UTC)
TRIGGER = "pricecast_bars_maintain"


def raw_ticks(n: int, symbols: int, source: str) -> Iterator[list[dict[str, Any]]]:
    """Chunks of raw ticks: each symbol a gentle walk, one tick per symbol per second."""
    names = [f"B{i:03d}-USD" for i in range(symbols)]
    chunk: list[dict[str, Any]] = []
    for i in range(n):
        k, s = divmod(i, symbols)
        chunk.append(
            {
                "symbol": names[s],
                "ts": T0 + timedelta(seconds=k),
                "price": 100.0 + s + (k % 500) * 0.01,
                "volume": 1.0 + (i % 7),
                "source": source,
            }
        )
        if len(chunk) == CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def count(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM price_ticks")).scalar_one())


def reset(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text("TRUNCATE price_ticks, assets CASCADE"))
        if conn.execute(sa.text("SELECT to_regproc('pricecast_reset_bars')")).scalar():
            conn.execute(sa.text("SELECT pricecast_reset_bars()"))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("VACUUM ANALYZE price_ticks"))


def has_trigger(engine: sa.Engine) -> bool:
    with engine.connect() as conn:
        return bool(
            conn.execute(
                sa.text("SELECT 1 FROM pg_trigger WHERE tgname = :n"), {"n": TRIGGER}
            ).scalar()
        )


def set_trigger(engine: sa.Engine, enabled: bool) -> None:
    action = "ENABLE" if enabled else "DISABLE"
    with engine.begin() as conn:
        conn.execute(sa.text(f"ALTER TABLE price_ticks {action} TRIGGER {TRIGGER}"))


def copy_baseline(engine: sa.Engine) -> float:
    """Rows/s of one COPY of the same rows (generation and formatting not timed)."""
    buf = io.StringIO()
    for chunk in raw_ticks(TICKS, SYMBOLS, "bench"):
        buf.write(
            "".join(
                f"{t['symbol']}\t{t['ts'].isoformat()}\t{t['price']!r}\t{t['volume']!r}\tbench\n"
                for t in chunk
            )
        )
    buf.seek(0)
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        start = time.perf_counter()
        cur.copy_expert("COPY price_ticks (symbol, ts, price, volume, source) FROM STDIN", buf)
        raw.commit()
        elapsed = time.perf_counter() - start
    finally:
        raw.close()
    return TICKS / elapsed


def writer_env(settings: Settings, health_port: int) -> dict[str, str]:
    env = infra.export_env(settings)
    env.update(
        PRICECAST_INGEST_HEALTH_PORT=str(health_port),
        PRICECAST_KAFKA_PARTITIONS=str(settings.kafka_partitions),
        PRICECAST_WRITER_BATCH_SIZE=str(settings.writer_batch_size),
        PRICECAST_LOG_LEVEL="WARNING",
        PRICECAST_STATEMENT_TIMEOUT_MS="60000",
    )
    return env


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc; 0.0 elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def consumed(port: int) -> int:
    """Records the writer behind ``port`` has consumed (its /health/detailed)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/detailed", timeout=5) as r:
            body = json.load(r)
    except OSError:
        return 0
    return int(body.get("writer", {}).get("consumed", 0))


def warmup_round(settings: Settings, round_: int) -> list[dict[str, Any]]:
    """One tick on every partition of ``prices`` (source "warmup", outside the bench's data)."""
    ticks: dict[int, dict[str, Any]] = {}
    i = 0
    while len(ticks) < settings.kafka_partitions:
        symbol = f"W{i}-USD"
        part = partition_for(symbol.encode(), settings.kafka_partitions)
        ticks.setdefault(
            part,
            {
                "symbol": symbol,
                "ts": T0 + timedelta(seconds=round_),
                "price": 1.0,
                "volume": 1.0,
                "source": "warmup",
            },
        )
        i += 1
    return list(ticks.values())


async def e2e(settings: Settings, engine: sa.Engine, writers: int = 1) -> dict[str, float]:
    await ensure_topics(settings)
    ports = [infra.free_port() for _ in range(writers)]
    procs = [
        subprocess.Popen(  # noqa: ASYNC220 - started once, before the clock runs
            [sys.executable, "-m", "services.cli", "ingest", "--role", "writer"],
            env=writer_env(settings, port),
        )
        for port in ports
    ]

    def check_alive() -> None:
        if any(p.poll() is not None for p in procs):
            raise RuntimeError("writer exited")

    publisher = TickPublisher(settings)
    await publisher.start()
    try:
        # Warm-up: every writer has joined the group and holds partitions once each has
        # consumed a tick (a round puts one on every partition).
        warm = 0
        while True:
            round_ = await publisher.validate_and_publish(warmup_round(settings, warm), "bench")
            warm += len(round_[0])
            while count(engine) < warm:
                check_alive()
                await asyncio.sleep(0.1)
            if all(await asyncio.gather(*(asyncio.to_thread(consumed, p) for p in ports))):
                break
            await asyncio.sleep(0.5)
        target = TICKS + warm
        cpu0 = sum(cpu_seconds(p.pid) for p in procs)
        start = time.perf_counter()
        for chunk in raw_ticks(TICKS, SYMBOLS, "bench"):
            await publisher.validate_and_publish(chunk, "bench")
        published_s = time.perf_counter() - start
        while (stored := count(engine)) < target:
            check_alive()
            await asyncio.sleep(0.1)
        elapsed = time.perf_counter() - start
        cpu = sum(cpu_seconds(p.pid) for p in procs) - cpu0
        if stored != target:
            raise RuntimeError(f"stored {stored}, expected {target}")
        return {
            "rate": TICKS / elapsed,
            "publish_rate": TICKS / published_s,
            "seconds": elapsed,
            "writer_cpu_us_per_tick": cpu / TICKS * 1e6,
        }
    finally:
        await publisher.stop()
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(30)


def run_pair(
    settings: Settings, engine: sa.Engine, writers: int = 1
) -> tuple[dict[str, float], float]:
    reset(engine)
    result = asyncio.run(e2e(settings, engine, writers))
    reset(engine)
    baseline = copy_baseline(engine)
    reset(engine)
    return result, baseline


def summary(result: dict[str, float], baseline: float) -> dict[str, float]:
    return {
        "value": round(result["rate"], 1),
        "baseline": round(baseline, 1),
        "ratio": round(result["rate"] / baseline, 4),
        "publish_rate": round(result["publish_rate"], 1),
        "writer_cpu_us_per_tick": round(result["writer_cpu_us_per_tick"], 2),
    }


def main() -> None:
    load_start = os.getloadavg()[0]
    with bench_settings(kafka_partitions=6, writer_batch_size=10_000) as settings:
        engine = sa.create_engine(settings.database_url)
        try:
            trigger = has_trigger(engine)
            extra: dict[str, Any] = {"bar_trigger": trigger}
            if trigger:
                set_trigger(engine, False)
                plain, plain_base = run_pair(settings, engine)
                set_trigger(engine, True)
                extra["without_bar_trigger"] = summary(plain, plain_base)
            result, baseline = run_pair(settings, engine)
            if TWO_WRITERS:
                reset(engine)
                two = asyncio.run(e2e(settings, engine, writers=2))
                reset(engine)
                extra["two_writers"] = summary(two, baseline)
        finally:
            engine.dispose()
    extra.update(
        publish_rate=round(result["publish_rate"], 1),
        seconds=round(result["seconds"], 2),
        writer_cpu_us_per_tick=round(result["writer_cpu_us_per_tick"], 2),
        writer="separate process (pricecast ingest --role writer)",
        loadavg={"start": round(load_start, 2), "end": round(os.getloadavg()[0], 2)},
    )
    write_result(
        "ingest_e2e",
        result["rate"],
        "ticks/s",
        {"name": "copy_into_price_ticks", "value": round(baseline, 1), "unit": "ticks/s"},
        {
            "ticks": TICKS,
            "symbols": SYMBOLS,
            "partitions": settings.kafka_partitions,
            "writer_batch_size": settings.writer_batch_size,
            "writers": 1,
        },
        extra,
    )


if __name__ == "__main__":
    main()
