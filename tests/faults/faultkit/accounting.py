"""What was acknowledged, what is stored, what was forecast: the per-fault figures."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from faultkit.load import SOURCE, Acked

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


def floor(ts: datetime, size: timedelta) -> datetime:
    epoch = datetime(1970, 1, 1, tzinfo=ts.tzinfo)
    return epoch + ((ts - epoch) // size) * size


def stored_keys(engine: Engine, symbols: list[str]) -> set[tuple[str, datetime]]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT symbol, ts FROM price_ticks WHERE source = :src AND symbol = ANY(:s)"),
            {"src": SOURCE, "s": symbols},
        ).all()
    return {(r[0], r[1]) for r in rows}


def duplicate_rows(engine: Engine, symbols: list[str]) -> int:
    """Rows sharing a natural key (the primary key makes this 0 unless it was dropped)."""
    with engine.connect() as conn:
        return int(
            conn.execute(
                sa.text(
                    "SELECT count(*) - count(DISTINCT (symbol, ts, source)) FROM price_ticks"
                    " WHERE symbol = ANY(:s)"
                ),
                {"s": symbols},
            ).scalar()
            or 0
        )


def bar_miscounts(engine: Engine, symbols: list[str], since: datetime) -> int:
    """Minute bars whose trade count differs from the ticks stored in their bucket: a tick
    counted twice (or missed) by the bar maintenance."""
    with engine.connect() as conn:
        return int(
            conn.execute(
                sa.text(
                    """
                    WITH t AS (
                        SELECT symbol, date_trunc('minute', ts) AS bucket, count(*) AS n
                        FROM price_ticks WHERE symbol = ANY(:s) AND ts >= :since
                        GROUP BY 1, 2)
                    SELECT count(*) FROM t FULL JOIN (
                        SELECT symbol, bucket, trade_count FROM price_1m
                        WHERE symbol = ANY(:s) AND bucket >= :since) b
                      USING (symbol, bucket)
                    WHERE t.n IS DISTINCT FROM b.trade_count
                    """
                ),
                {"s": symbols, "since": since},
            ).scalar()
            or 0
        )


@dataclass
class TickAccount:
    produced: int
    acknowledged: int
    not_acknowledged: int
    stored: int  # stored ticks produced in this phase (acknowledged or not)
    stored_acknowledged: int
    lost_acknowledged: int  # acknowledged by a live broker, in its log, not stored: must be 0
    lost_by_in_memory_broker: int  # acknowledged by an instance then killed, never consumed
    acked_not_kept_by_broker: int  # acknowledged by a live broker, absent from its log
    lost_examples: list[str]


def account(
    phase: str,
    produced: int,
    acked: Iterable[Acked],
    unacked: Iterable[tuple[str, datetime, str]],
    stored: set[tuple[str, datetime]],
    killed_epochs: set[int],
    not_in_log: set[tuple[str, datetime]],
) -> TickAccount:
    mine = [a for a in acked if a.phase == phase]
    not_acked = [(s, ts) for s, ts, p in unacked if p == phase]
    stored_acked = [a for a in mine if (a.symbol, a.ts) in stored]
    missing = [a for a in mine if (a.symbol, a.ts) not in stored]
    by_broker = [a for a in missing if a.epoch in killed_epochs]
    live = [a for a in missing if a.epoch not in killed_epochs]
    dropped = [a for a in live if (a.symbol, a.ts) in not_in_log]
    lost = [a for a in live if (a.symbol, a.ts) not in not_in_log]
    return TickAccount(
        produced=produced,
        acknowledged=len(mine),
        not_acknowledged=len(not_acked),
        stored=len(stored_acked) + sum(1 for k in not_acked if k in stored),
        stored_acknowledged=len(stored_acked),
        lost_acknowledged=len(lost),
        lost_by_in_memory_broker=len(by_broker),
        acked_not_kept_by_broker=len(dropped),
        lost_examples=[f"{a.symbol}@{a.ts.isoformat()} (epoch {a.epoch})" for a in lost[:5]],
    )


def missing_forecasts(
    engine: Engine,
    symbols: list[str],
    load_start: datetime,
    horizons: dict[str, int],
) -> dict[str, list[str]]:
    """Closed bars (a later bar holds a stored tick) of the load, per interval, whose
    forecasts are not all in ``predictions``: ``{"1h": ["SYM@bucket(n/24)", ...], ...}``."""
    out: dict[str, list[str]] = {}
    with engine.connect() as conn:
        for interval, size in (("1h", HOUR), ("1d", DAY)):
            rows = conn.execute(
                sa.text(
                    """
                    SELECT b.symbol, b.bucket, count(p.horizon)
                    FROM (SELECT symbol, bucket FROM {rel} WHERE symbol = ANY(:s)
                            AND bucket >= :start) b
                    LEFT JOIN predictions p ON p.symbol = b.symbol AND p.interval = :iv
                            AND p.as_of = b.bucket
                    WHERE b.bucket < (SELECT max(bucket) FROM {rel} x WHERE x.symbol = b.symbol)
                    GROUP BY 1, 2
                    """.format(rel="price_1h" if interval == "1h" else "price_1d")
                ),
                {"s": symbols, "start": floor(load_start, size), "iv": interval},
            ).all()
            out[interval] = [
                f"{sym}@{bucket.isoformat()}({n}/{horizons[interval]})"
                for sym, bucket, n in rows
                if n < horizons[interval]
            ]
    return out


def closed_bars(engine: Engine, symbols: list[str], load_start: datetime) -> dict[str, int]:
    out: dict[str, int] = {}
    with engine.connect() as conn:
        for interval, rel, size in (("1h", "price_1h", HOUR), ("1d", "price_1d", DAY)):
            out[interval] = int(
                conn.execute(
                    sa.text(
                        f"SELECT count(*) FROM {rel} b WHERE symbol = ANY(:s) AND bucket >= :st"
                        f" AND bucket < (SELECT max(bucket) FROM {rel} x"
                        " WHERE x.symbol = b.symbol)"
                    ),
                    {"s": symbols, "st": floor(load_start, size)},
                ).scalar()
                or 0
            )
    return out


def counts(values: Iterable[int]) -> dict[str, int]:
    return {str(k): v for k, v in sorted(Counter(values).items())}
