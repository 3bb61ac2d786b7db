"""bars_query_scaling: one year of 1h bars for one symbol at 10M ticks vs at 1M ticks.

Data: >= 100 symbols, each with evenly spaced ticks over one year (every hour has ticks at
both sizes, so the query returns the same 8,760 bars); the 1M set is every 10th tick, the
other 9M arrive afterwards (late, interleaved: bar maintenance corrects closed buckets).
Ticks are loaded with COPY into a staging table and INSERT .. SELECT, bar maintenance on.

Also measured: ingest ticks/s with bar maintenance on vs off, in the writer's pattern
(COPY into a temp table, INSERT .. ON CONFLICT DO NOTHING, commit; 5,000-tick batches).

Environment: BENCH_TICKS (default 10_000_000), BENCH_SYMBOLS (100), BENCH_QUERIES (300),
BENCH_INGEST_TICKS (200_000). The plain-PostgreSQL path is measured unless
PRICECAST_STORAGE_PATH says otherwise (the server may have TimescaleDB installed).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from bench.common import bench_settings, latency_extra, write_result
from services.common.bars import get_bar_columns, get_bars
from services.common.db import copy_ticks
from services.storage.path import storage_path

YEAR_START = datetime(2025, 1, 1, tzinfo=UTC)
YEAR_SECONDS = 365 * 86400
QUERY_SYMBOL_INDEX = 42
TRIGGER = "pricecast_bars_maintain"


def _symbols(n: int) -> list[str]:
    return [f"S{i:03d}-USD" for i in range(n)]


def _copy_insert(engine: Engine, text: str, *, on_conflict: bool) -> None:
    with engine.begin() as conn:
        copy_ticks(conn, text, on_conflict=on_conflict)


def _set_maintenance(engine: Engine, enabled: bool) -> None:
    if _path(engine) != "postgres":
        return
    with engine.begin() as conn:
        verb = "ENABLE" if enabled else "DISABLE"
        conn.execute(sa.text(f"ALTER TABLE price_ticks {verb} TRIGGER {TRIGGER}"))


def _path(engine: Engine) -> str:
    with engine.connect() as conn:
        return storage_path(conn)


def _reset(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text("TRUNCATE price_ticks"))
        conn.execute(sa.text("SELECT pricecast_reset_bars()"))
    _vacuum(engine)


def _vacuum(engine: Engine) -> None:
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("VACUUM ANALYZE"))


def _lines(symbols: np.ndarray, seconds: np.ndarray, rng: np.random.Generator) -> str:
    """COPY text for ticks (symbol index, seconds since YEAR_START)."""
    names = np.array(_symbols(int(symbols.max()) + 1))[symbols]
    stamps = np.datetime_as_string(
        np.datetime64(YEAR_START.replace(tzinfo=None), "us")
        + (seconds * 1e6).astype("timedelta64[us]"),
        unit="us",
    )
    prices = np.round(100.0 + 10.0 * rng.random(len(seconds)), 4).astype(str)
    volumes = np.round(rng.random(len(seconds)), 6).astype(str)
    rows = zip(names, stamps, prices, volumes, strict=True)
    return "".join(f"{n}\t{s}+00\t{p}\t{v}\tbench\n" for n, s, p, v in rows)


# --- ingest with bar maintenance on / off ---------------------------------------------
def _live_batches(n_ticks: int, n_symbols: int, batch: int) -> list[str]:
    """Live-like stream: every symbol ticks about once a second, batches in time order."""
    rng = np.random.default_rng(1)
    idx = np.arange(n_ticks)
    symbols = idx % n_symbols
    seconds = 200 * 86400 + (idx // n_symbols) + rng.random(n_ticks) * 0.9
    return [
        _lines(symbols[i : i + batch], seconds[i : i + batch], rng)
        for i in range(0, n_ticks, batch)
    ]


def measure_ingest(engine: Engine, n_ticks: int, n_symbols: int) -> dict[str, Any]:
    batches = _live_batches(n_ticks, n_symbols, 5000)
    rates: dict[str, list[float]] = {"on": [], "off": []}
    for mode in ("off", "on", "off", "on"):
        _reset(engine)
        _set_maintenance(engine, mode == "on")
        t0 = time.perf_counter()
        for text in batches:
            _copy_insert(engine, text, on_conflict=True)
        rates[mode].append(n_ticks / (time.perf_counter() - t0))
    _set_maintenance(engine, True)
    _reset(engine)
    on, off = max(rates["on"]), max(rates["off"])
    return {
        "ingest_ticks_per_s_maintenance_on": round(on),
        "ingest_ticks_per_s_maintenance_off": round(off),
        "ingest_on_off_ratio": round(on / off, 3),
        "ingest_runs": {k: [round(v) for v in vs] for k, vs in rates.items()},
        "ingest_ticks": n_ticks,
        "ingest_batch": 5000,
    }


# --- scaling ----------------------------------------------------------------------------
def _phase_chunks(
    n_symbols: int, per_symbol: int, keep: str, chunk: int = 250_000
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Ticks in time order (all symbols interleaved); ``keep`` 'first' = every 10th tick of
    each symbol (the 1M set), 'rest' = the others."""
    spacing = YEAR_SECONDS / per_symbol
    k = np.arange(per_symbol)
    k = k[k % 10 == 0] if keep == "first" else k[k % 10 != 0]
    # time-major order: for each k, all symbols
    ks = np.repeat(k, n_symbols)
    syms = np.tile(np.arange(n_symbols), len(k))
    seconds = ks * spacing + syms * (spacing / (n_symbols + 1))
    for i in range(0, len(ks), chunk):
        yield syms[i : i + chunk], seconds[i : i + chunk]


def load_phase(engine: Engine, n_symbols: int, per_symbol: int, keep: str) -> dict[str, Any]:
    rng = np.random.default_rng(2 if keep == "first" else 3)
    rows = 0
    copy_s = 0.0
    t0 = time.perf_counter()
    for syms, seconds in _phase_chunks(n_symbols, per_symbol, keep):
        text = _lines(syms, seconds, rng)
        t1 = time.perf_counter()
        _copy_insert(engine, text, on_conflict=False)
        copy_s += time.perf_counter() - t1
        rows += len(syms)
    total = time.perf_counter() - t0
    t2 = time.perf_counter()
    _vacuum(engine)
    return {
        "rows": rows,
        "db_load_s": round(copy_s, 1),
        "db_ticks_per_s": round(rows / copy_s),
        "wall_s_incl_generation": round(total, 1),
        "vacuum_analyze_s": round(time.perf_counter() - t2, 1),
    }


def measure_query(engine: Engine, symbol: str, n: int) -> dict[str, Any]:
    start, end = YEAR_START, YEAR_START + timedelta(days=365)
    bars_ms: list[float] = []
    cols_ms: list[float] = []
    with engine.connect() as conn:
        for _ in range(10):  # warm-up
            get_bars(conn, symbol, "1h", start, end)
        for _ in range(n):
            t0 = time.perf_counter()
            bars = get_bars(conn, symbol, "1h", start, end)
            bars_ms.append((time.perf_counter() - t0) * 1000)
            t0 = time.perf_counter()
            cols = get_bar_columns(conn, symbol, "1h", start, end)
            cols_ms.append((time.perf_counter() - t0) * 1000)
        server = conn.execute(
            sa.text(
                "EXPLAIN (ANALYZE, FORMAT JSON) SELECT * FROM price_1h "
                "WHERE symbol = :s AND bucket >= :a AND bucket < :b ORDER BY bucket"
            ),
            {"s": symbol, "a": start, "b": end},
        ).scalar()
    assert len(bars) == len(cols)
    return {
        "bars": len(bars),
        "get_bars": latency_extra(bars_ms),
        "get_bar_columns": latency_extra(cols_ms),
        "server_execution_ms": round(server[0]["Execution Time"], 3),  # type: ignore[index]
    }


def _load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def main() -> None:
    os.environ.setdefault("PRICECAST_STORAGE_PATH", "postgres")
    total = int(os.environ.get("BENCH_TICKS", "10000000"))
    n_symbols = int(os.environ.get("BENCH_SYMBOLS", "100"))
    n_queries = int(os.environ.get("BENCH_QUERIES", "300"))
    ingest_ticks = int(os.environ.get("BENCH_INGEST_TICKS", "200000"))
    per_symbol = total // n_symbols
    symbol = _symbols(n_symbols)[QUERY_SYMBOL_INDEX]
    with bench_settings() as settings:
        engine = sa.create_engine(settings.database_url, pool_size=2)
        try:
            path = _path(engine)
            load_before = _load_average()
            ingest = measure_ingest(engine, ingest_ticks, n_symbols)
            load_small = load_phase(engine, n_symbols, per_symbol, "first")
            small = measure_query(engine, symbol, n_queries)
            load_big = load_phase(engine, n_symbols, per_symbol, "rest")
            big = measure_query(engine, symbol, n_queries)
            with engine.connect() as conn:
                ticks = conn.execute(sa.text("SELECT count(*) FROM price_ticks")).scalar()
                sizes = conn.execute(
                    sa.text(
                        "SELECT pg_size_pretty(pg_total_relation_size('price_ticks')), "
                        "pg_size_pretty(pg_database_size(current_database()))"
                    )
                ).one()
        finally:
            engine.dispose()
    value = big["get_bars"]["p50_ms"]
    base = small["get_bars"]["p50_ms"]
    write_result(
        "bars_query_scaling",
        value,
        "ms",
        {"name": "same_query_at_1m_ticks", "value": base, "unit": "ms"},
        {
            "ticks": ticks,
            "baseline_ticks": load_small["rows"],
            "symbols": n_symbols,
            "query": f"get_bars({symbol!r}, '1h', one year)",
            "bars_returned": big["bars"],
            "queries": n_queries,
            "storage_path": path,
            "load_average_at_start": load_before,
        },
        {
            "p50_ms": big["get_bars"]["p50_ms"],
            "p99_ms": big["get_bars"]["p99_ms"],
            "baseline_p50_ms": small["get_bars"]["p50_ms"],
            "baseline_p99_ms": small["get_bars"]["p99_ms"],
            "p99_ratio": round(big["get_bars"]["p99_ms"] / small["get_bars"]["p99_ms"], 3),
            "at_10m": big,
            "at_1m": small,
            "load_1m": load_small,
            "load_9m_late": load_big,
            "price_ticks_size": sizes[0],
            "database_size": sizes[1],
            "load_average_at_end": _load_average(),
            **ingest,
        },
    )


if __name__ == "__main__":
    main()
