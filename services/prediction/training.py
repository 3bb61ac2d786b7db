"""``pricecast train`` (the retraining CronJob) and ``pricecast models rollback``.

One global LSTM per interval is trained on every eligible asset (enough daily history), scored
walk-forward on each asset's held-out tail, registered as a candidate and promoted only when
it beats naive and the current champion scored on the same tails (``ml.promotion``). A
promotion publishes ``model_promoted`` on ``model-events`` (one event per asset, keyed by
symbol) so prediction services reload.

Safe to run twice: a session advisory lock lets one run at a time (a second run exits 0 and
says so); a rerun on unchanged data trains the same candidate (fixed seed) which cannot beat
the identical champion, so it is rejected and nothing changes. Exit status is non-zero when
the run failed (CronJob semantics); a rejected candidate is a normal outcome.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from ml import registry
from ml.lstm import LSTMConfig
from ml.promotion import decide_promotion, score, train_candidate
from services.common.bars import get_bars, history_days
from services.common.config import Settings, get_settings
from services.common.db import make_engine
from services.common.events import ModelPromoted, encode

LOCK_KEY = "pricecast:train"
MAX_BARS = {"1d": 5000, "1h": 24 * 365 * 2}
MODEL = "lstm"

Progress = Callable[[str], None]


def _print(msg: str) -> None:
    print(msg, flush=True)


@dataclass
class TrainOutcome:
    status: str  # "promoted" | "rejected" | "skipped"
    reason: str
    version: str | None = None
    symbols: list[str] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------- data
def load_closes(conn: sa.Connection, symbol: str, interval: str) -> tuple[np.ndarray, Any, Any]:
    """Closes of ``symbol`` (oldest first) and the first/last bar time."""
    bars = get_bars(conn, symbol, interval, limit=MAX_BARS[interval])
    if not bars:
        return np.zeros(0), None, None
    closes = np.array([bar.close for bar in bars], dtype=np.float64)
    return closes, bars[0].bucket, bars[-1].bucket


def eligible_symbols(
    conn: sa.Connection, min_days: int, symbols: Sequence[str] | None = None
) -> list[str]:
    """Active assets (or ``symbols``) with at least ``min_days`` days of daily bars."""
    if symbols:
        candidates = list(dict.fromkeys(symbols))
    else:
        rows = conn.execute(sa.text("SELECT symbol FROM assets WHERE active ORDER BY symbol"))
        candidates = [str(symbol) for (symbol,) in rows]
    return [symbol for symbol in candidates if history_days(conn, symbol) >= min_days]


# ------------------------------------------------------------------------ training
def train_interval(
    engine: Engine,
    settings: Settings,
    interval: str,
    symbols: Sequence[str] | None = None,
    *,
    config: LSTMConfig | None = None,
    progress: Progress = _print,
) -> TrainOutcome:
    """Train, validate, register and (maybe) promote the global LSTM of ``interval``."""
    with engine.connect() as conn:
        chosen = eligible_symbols(conn, settings.min_history_days_lstm, symbols)
        if symbols:
            for skipped in sorted(set(symbols) - set(chosen)):
                progress(f"skip {skipped}: < {settings.min_history_days_lstm} days of history")
        series: dict[str, np.ndarray] = {}
        starts, ends = [], []
        for number, sym in enumerate(chosen, 1):
            closes, first, last = load_closes(conn, sym, interval)
            progress(f"[{number}/{len(chosen)}] {sym}: {closes.size} {interval} bars")
            if closes.size >= 60:
                series[sym] = closes
                starts.append(first)
                ends.append(last)
    if not series:
        progress("no eligible assets: nothing to train")
        return TrainOutcome("skipped", "no eligible assets")
    started = time.perf_counter()
    progress(f"training a global {MODEL} on {len(series)} assets ({interval})")
    model, holdouts = train_candidate(series, horizon=1, config=config)
    cand = score(model, series, holdouts, horizon=1)
    progress(
        f"trained in {time.perf_counter() - started:.1f}s "
        f"({model.training.get('epochs')} epochs); walk-forward MASE {cand.mase}"
    )
    with engine.begin() as conn:
        current = registry.get_champion(conn, MODEL, registry.GLOBAL_SCOPE, interval)
        champ_mase = None
        if current is not None:
            champ_model = registry.load_model(conn, current)
            champ_mase = score(champ_model, series, holdouts, horizon=1).mase
            progress(f"champion {current.label}: MASE {champ_mase} on the same tails")
        decision = decide_promotion(cand.mase, champ_mase)
        metrics = {
            **cand.to_dict(),
            "champion_mase": champ_mase,
            "champion": None if current is None else current.label,
            "decision": decision.reason,
            "holdout": holdouts,
            "training": model.training,
        }
        version = registry.register_candidate(
            conn,
            model=MODEL,
            scope=registry.GLOBAL_SCOPE,
            interval=interval,
            artifact=model.to_bytes(),
            metrics=metrics,
            params=asdict(model.config),
            data_start=min(starts),
            data_end=max(ends),
        )
        if decision.promote:
            version = registry.promote(conn, version.id)
        else:
            registry.reject(conn, version.id, decision.reason)
    status = "promoted" if decision.promote else "rejected"
    progress(f"{version.label}: {status}: {decision.reason}")
    return TrainOutcome(status, decision.reason, version.label, list(series), metrics)


# ---------------------------------------------------------------------------- kafka
async def _publish(settings: Settings, events: Sequence[ModelPromoted]) -> None:
    from services.common.kafka import make_producer, start_with_backoff

    producer = make_producer(settings)
    await start_with_backoff(producer.start, settings.startup_wait_s, what="kafka producer")
    try:
        for event in events:
            await producer.send_and_wait(settings.topic_model_events, encode(event), key=event.key)
    finally:
        await producer.stop()


def publish_promotion(
    settings: Settings,
    symbols: Sequence[str],
    version: str,
    interval: str,
    reason: str,
    model: str = MODEL,
) -> None:
    """One ``model_promoted`` event per asset (key: the asset) on ``model-events``."""
    events = [
        ModelPromoted(symbol=symbol, model=model, version=version, interval=interval, reason=reason)
        for symbol in symbols
    ]
    asyncio.run(_publish(settings, events))


# ------------------------------------------------------------------ retrain requests
def claim_pending(engine: Engine, interval: str) -> list[tuple[int, str | None]]:
    with engine.begin() as conn:
        rows = conn.execute(
            sa.text(
                "UPDATE retrain_requests SET status = 'running', started_at = now() "
                "WHERE status = 'queued' AND interval = :i RETURNING id, symbol"
            ),
            {"i": interval},
        )
        return [(int(request_id), symbol) for request_id, symbol in rows]


def finish_requests(engine: Engine, ids: Sequence[int], status: str, details: str) -> None:
    if not ids:
        return
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE retrain_requests SET status = :s, finished_at = now(), "
                "details = details || jsonb_build_object('result', CAST(:d AS text)) "
                "WHERE id = ANY(:ids)"
            ),
            {"s": status, "d": details, "ids": list(ids)},
        )


# ------------------------------------------------------------------------ commands
def run(
    args: argparse.Namespace,
    settings: Settings,
    engine: Engine,
    *,
    config: LSTMConfig | None = None,
    progress: Progress = _print,
) -> int:
    interval = getattr(args, "interval", "1d") or "1d"
    with engine.connect() as lock_conn:
        got = lock_conn.execute(
            sa.text("SELECT pg_try_advisory_lock(hashtext(:k))"), {"k": LOCK_KEY}
        ).scalar()
        lock_conn.commit()
        if not got:
            progress("another training run holds the lock; nothing to do")
            return 0
        try:
            return _run_locked(args, settings, engine, interval, config, progress)
        finally:
            lock_conn.execute(sa.text("SELECT pg_advisory_unlock(hashtext(:k))"), {"k": LOCK_KEY})
            lock_conn.commit()


def _run_locked(
    args: argparse.Namespace,
    settings: Settings,
    engine: Engine,
    interval: str,
    config: LSTMConfig | None,
    progress: Progress,
) -> int:
    ids: list[int] = []
    symbols = getattr(args, "symbols", None) or None
    if getattr(args, "pending", False):
        claimed = claim_pending(engine, interval)
        if not claimed:
            progress("no queued retrain requests")
            return 0
        ids = [request_id for request_id, _ in claimed]
        # The LSTM is global: any request retrains it on every eligible asset.
        progress(
            f"serving {len(ids)} retrain request(s): {[symbol or '*' for _, symbol in claimed]}"
        )
        symbols = None
    try:
        outcome = train_interval(
            engine, settings, interval, symbols, config=config, progress=progress
        )
        if outcome.status == "promoted" and outcome.version:
            if settings.kafka_configured:
                publish_promotion(
                    settings, outcome.symbols, outcome.version, interval, outcome.reason
                )
                progress(f"published model_promoted for {len(outcome.symbols)} assets")
            else:
                progress("KAFKA_BOOTSTRAP_SERVERS not set: model_promoted not published")
    except Exception as exc:  # noqa: BLE001 - any failure: mark requests failed, exit 1
        finish_requests(engine, ids, "failed", f"{type(exc).__name__}: {exc}")
        print(f"training failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    finish_requests(engine, ids, "done", f"{outcome.status}: {outcome.reason}")
    return 0


def _with_database(
    args: argparse.Namespace,
    command: Callable[[argparse.Namespace, Settings, Engine], int],
    pool_size: int,
) -> int:
    """Run ``command`` with the settings and a database engine of ``pool_size``."""
    settings = get_settings()
    engine = make_engine(settings, pool_size=pool_size)
    try:
        return command(args, settings, engine)
    finally:
        engine.dispose()


def main(args: argparse.Namespace) -> int:
    return _with_database(args, run, pool_size=2)


def rollback(
    args: argparse.Namespace, settings: Settings, engine: Engine, progress: Progress = _print
) -> int:
    model = getattr(args, "model", MODEL) or MODEL
    interval = getattr(args, "interval", "1d") or "1d"
    symbol = args.symbol
    try:
        with engine.begin() as conn:
            scope = symbol
            if registry.get_champion(conn, model, symbol, interval) is None:
                scope = registry.GLOBAL_SCOPE  # assets are served by the global model
            restored = registry.rollback(conn, model, scope, interval)
    except registry.RegistryError as exc:
        print(f"rollback failed: {exc}", file=sys.stderr)
        return 1
    progress(f"restored {restored.label} as champion for {symbol}")
    if settings.kafka_configured:
        publish_promotion(settings, [symbol], restored.label, interval, "rollback", model)
    return 0


def rollback_main(args: argparse.Namespace) -> int:
    return _with_database(args, rollback, pool_size=1)
