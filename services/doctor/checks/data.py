"""Whether the data can be trusted: bar maintenance, fresh prices, enough history, accuracy."""

from __future__ import annotations

import math
from typing import Any

import sqlalchemy as sa

from services.doctor.model import CheckSpec, Context, Finding

_NEEDS_SCHEMA = ("postgres.migrations",)


def storage(ctx: Context) -> Finding:
    """The active storage path and how far the bars are behind the raw ticks."""
    from services.storage.path import aggregate_lag, bar_maintenance_enabled, storage_path

    name = "storage.aggregates"
    with ctx.engine().connect() as conn:
        path = storage_path(conn)
        enabled = bar_maintenance_enabled(conn)
        lag = aggregate_lag(conn)
    data: dict[str, Any] = {
        "path": path,
        "maintenance_enabled": enabled,
        "lag_s": None if math.isinf(lag) else lag,
    }
    mechanism = (
        "trigger pricecast_bars_maintain" if path == "postgres" else "continuous-aggregate policies"
    )
    if not enabled:
        fix = (
            "ALTER TABLE price_ticks ENABLE TRIGGER pricecast_bars_maintain, then backfill the gap"
            if path == "postgres"
            else "re-enable the refresh policies: SELECT alter_job(job_id, scheduled => true) "
            "FROM timescaledb_information.jobs WHERE proc_name = "
            "'policy_refresh_continuous_aggregate'"
        )
        return Finding(name, "fail", f"path {path}: {mechanism} disabled", fix, data)
    lag_text = "ticks without any bar" if math.isinf(lag) else f"bars {lag:.0f}s behind ticks"
    evidence = f"path {path} ({mechanism}); {lag_text}"
    if lag > ctx.settings.doctor_aggregate_lag_s:
        fix = (
            "bars lag the ticks: on TimescaleDB check the refresh job "
            "(SELECT * FROM timescaledb_information.job_stats) and its errors; on plain "
            "PostgreSQL the trigger must be enabled (bars are written in the tick's transaction)"
        )
        return Finding(name, "warn", evidence, fix, data)
    return Finding(name, "ok", evidence, data=data)


_NEWEST_TICKS = sa.text(
    """
    SELECT a.symbol, t.ts, extract(epoch FROM now() - t.ts) AS age_s
    FROM assets a
    LEFT JOIN LATERAL (
        SELECT ts FROM price_ticks p WHERE p.symbol = a.symbol ORDER BY ts DESC LIMIT 1
    ) t ON true
    WHERE a.active
    ORDER BY age_s DESC NULLS FIRST
    """
)


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def stale_prices(ctx: Context) -> Finding:
    """Newest tick age of every active asset against ``stale_after_s``."""
    name = "data.stale_prices"
    limit = ctx.settings.stale_after_s
    with ctx.engine().connect() as conn:
        rows = conn.execute(_NEWEST_TICKS).mappings().all()
    if not rows:
        return Finding(
            name,
            "warn",
            "no active assets: nothing is ingested yet",
            "load history and start the feed: pricecast run (demo) or pricecast backfill + "
            "pricecast ingest",
        )
    ages = {
        str(row["symbol"]): (None if row["age_s"] is None else float(row["age_s"])) for row in rows
    }
    stale = {symbol: age for symbol, age in ages.items() if age is None or age > limit}
    data = {"ages_s": ages, "stale_after_s": limit}
    if not stale:
        newest = max(age for age in ages.values() if age is not None)
        return Finding(
            name,
            "ok",
            f"{len(ages)} active assets, oldest newest-tick {_age(newest)} (limit {_age(limit)})",
            data=data,
        )
    listed = ", ".join(
        f"{symbol} {'no ticks' if age is None else _age(age)}"
        for symbol, age in list(stale.items())[:6]
    )
    more = f" (+{len(stale) - 6} more)" if len(stale) > 6 else ""
    return Finding(
        name,
        "fail",
        f"{len(stale)}/{len(ages)} active assets stale > {_age(limit)}: {listed}{more}",
        "is ingestion running and its writer keeping up? check pricecast doctor --only "
        "kafka.consumer_lag, the ingest pod/process logs and pricecast_upstream_errors_total "
        "(ERR_EXT_001/003: upstream timeout or quota); mark retired assets active=false",
        data,
    )


def insufficient_history(ctx: Context) -> Finding:
    """Assets refused a forecast for lack of history (ERR_PRED_001) or failing (ERR_PRED_003)."""
    name = "data.insufficient_history"
    with ctx.engine().connect() as conn:
        rows = (
            conn.execute(
                sa.text(
                    "SELECT symbol, interval, status, required_days, available_days, detail "
                    "FROM prediction_status WHERE status <> 'ok' ORDER BY status, symbol, interval"
                )
            )
            .mappings()
            .all()
        )
    short = [row for row in rows if row["status"] == "insufficient_history"]
    errors = [row for row in rows if row["status"] == "error"]
    data = {
        "insufficient_history": [dict(row) for row in short],
        "errors": [dict(row) for row in errors],
    }
    parts = [
        f"{row['symbol']} {row['interval']}: Required {row['required_days']} days, "
        f"Available {row['available_days']} days"
        for row in short[:6]
    ]
    parts += [
        f"{row['symbol']} {row['interval']}: error {row['detail'] or ''}".strip()
        for row in errors[:4]
    ]
    if errors:
        return Finding(
            name,
            "fail",
            "; ".join(parts),
            "forecasts fail (ERR_PRED_003): read the prediction service log for the symbol; "
            "check bars exist (SELECT count(*) FROM price_1d WHERE symbol = ...) and the champion "
            "loads (pricecast models rollback if a bad version was promoted)",
            data,
        )
    if short:
        return Finding(
            name,
            "warn",
            "; ".join(parts) + (f" (+{len(short) - 6} more)" if len(short) > 6 else ""),
            f"expected for new assets (ERR_PRED_001 until {ctx.settings.min_history_days_arima} "
            "days); to forecast now load history: pricecast backfill --csv FILE --symbol S",
            data,
        )
    return Finding(name, "ok", "every forecast asset has enough history", data=data)


_CHAMPIONS = sa.text(
    "SELECT model, scope, interval, version, metrics, promoted_at FROM model_versions "
    "WHERE status = 'champion'"
)
_OPEN_REQUESTS = sa.text(
    "SELECT coalesce(symbol, '*') AS symbol, interval FROM retrain_requests "
    "WHERE status IN ('queued', 'running')"
)


def _validation_mase(champions: list[Any], symbol: str, interval: str, model: str) -> float:
    """The champion's walk-forward MASE for the asset (its global MASE otherwise); 1.0, the
    naive level, for models fitted while serving (ARIMA, naive) — as the prediction service."""
    for champion in champions:
        if (
            champion["model"] == model
            and champion["interval"] == interval
            and champion["scope"] in (symbol, "*")
        ):
            metrics = champion["metrics"] or {}
            per = (metrics.get("per_series") or {}).get(symbol) or {}
            value = per.get("mase", metrics.get("mase"))
            if isinstance(value, int | float) and value > 0:
                return float(value)
    return 1.0


def model_accuracy(ctx: Context) -> Finding:
    """Rolling MASE of served forecasts over the champion's validation MASE, per asset."""
    from services.prediction.accuracy import rolling_accuracy

    name = "models.accuracy"
    settings = ctx.settings
    degraded: list[str] = []
    judged = 0
    worst: tuple[float, str] | None = None
    with ctx.engine().connect() as conn:
        champions = list(conn.execute(_CHAMPIONS).mappings())
        open_requests = {
            (row["symbol"], row["interval"]) for row in conn.execute(_OPEN_REQUESTS).mappings()
        }
        symbols = [
            str(row[0]) for row in conn.execute(sa.text("SELECT symbol FROM assets ORDER BY 1"))
        ]
        for symbol in symbols:
            for interval in ("1h", "1d"):
                for rolling in rolling_accuracy(conn, symbol, interval, settings.accuracy_window):
                    if rolling.mase is None or rolling.n < settings.accuracy_min_samples:
                        continue
                    judged += 1
                    reference = _validation_mase(champions, symbol, interval, rolling.model)
                    ratio = rolling.mase / reference
                    label = (
                        f"{symbol} {interval} {rolling.model}: MASE {rolling.mase:.2f} vs "
                        f"validation {reference:.2f} (x{ratio:.1f}, n={rolling.n})"
                    )
                    if worst is None or ratio > worst[0]:
                        worst = (ratio, label)
                    if ratio > settings.accuracy_degradation_factor:
                        queued = bool({(symbol, interval), ("*", interval)} & open_requests)
                        degraded.append(label + ("; retrain queued" if queued else ""))
    data = {"judged": judged, "degraded": degraded, "champions": len(champions)}
    if degraded:
        return Finding(
            name,
            "warn",
            "; ".join(degraded[:5])
            + (f" (+{len(degraded) - 5} more)" if len(degraded) > 5 else ""),
            "retrain: pricecast train --symbols S (the CronJob runs pricecast train --pending); "
            "if a new version made it worse: pricecast models rollback --symbol S; check the "
            "input data (data.stale_prices, gaps in price_1d)",
            data,
        )
    if judged == 0:
        return Finding(
            name,
            "ok",
            f"no asset has {settings.accuracy_min_samples}+ scored forecasts yet "
            f"({len(champions)} champion(s) registered)",
            data=data,
        )
    assert worst is not None
    return Finding(
        name,
        "ok",
        f"{judged} series within x{settings.accuracy_degradation_factor:g} of validation; "
        f"worst {worst[1]}",
        data=data,
    )


_COVERAGE = sa.text(
    "SELECT symbol, interval, avg(coverage) AS coverage, min(scored) AS scored, "
    "max(last_target) AS last_target FROM forecast_calibration "
    "WHERE level = :level AND coverage IS NOT NULL AND scored >= :min "
    "GROUP BY symbol, interval ORDER BY symbol, interval"
)


def model_coverage(ctx: Context) -> Finding:
    """Observed coverage of the default-level interval (the online calibration's record)."""
    name = "models.coverage"
    settings = ctx.settings
    level = settings.forecast_default_level
    low, high = level - 0.10, level + 0.10
    with ctx.engine().connect() as conn:
        rows = list(
            conn.execute(
                _COVERAGE, {"level": level, "min": settings.accuracy_min_samples}
            ).mappings()
        )
    off = [
        f"{row['symbol']} {row['interval']}: {float(row['coverage']):.0%} at {level:g} "
        f"(n>={row['scored']}, newest target {row['last_target']:%Y-%m-%d %H:%M})"
        for row in rows
        if not low <= float(row["coverage"]) <= high
    ]
    data = {"judged": len(rows), "off": off, "level": level}
    if off:
        return Finding(
            name,
            "warn",
            "; ".join(off[:5]) + (f" (+{len(off) - 5} more)" if len(off) > 5 else ""),
            "a regime change recovers within ~50 scored forecasts; if scoring stopped, fix the "
            "feed (data.stale_prices); reset a broken state: DELETE FROM forecast_calibration "
            "WHERE symbol = 'S'",
            data,
        )
    return Finding(
        name,
        "ok",
        f"{len(rows)} series cover {low:.0%}-{high:.0%} at level {level:g}"
        if rows
        else f"no series has {settings.accuracy_min_samples}+ scored forecasts per level yet",
        data=data,
    )


CHECKS = (
    CheckSpec("storage.aggregates", storage, needs=_NEEDS_SCHEMA),
    CheckSpec("data.stale_prices", stale_prices, needs=_NEEDS_SCHEMA),
    CheckSpec("data.insufficient_history", insufficient_history, needs=_NEEDS_SCHEMA),
    CheckSpec("models.accuracy", model_accuracy, needs=_NEEDS_SCHEMA),
    CheckSpec("models.coverage", model_coverage, needs=_NEEDS_SCHEMA),
)
