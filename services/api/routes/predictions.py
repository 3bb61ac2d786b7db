"""Latest prediction (the hot, cached path), prediction history and accuracy.

Cache hit: no database and no JSON parsing. The token's verified claims come from an
in-process cache (the deny-list is still checked), rate limit and deny-list are in-process
state synced with Redis in the background, the forecast is one Redis MGET (or the in-process
copy, at most ``api_local_cache_ms`` old) and the cached bytes go out as they are.
Miss: one SQL round trip, then the record is cached (only if absent, so a newer forecast
written meanwhile is never overwritten).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from sqlalchemy.engine import Engine

from services.api.core.errors import unknown_symbol
from services.api.deps import ConnDep, GuardedRoute, requires
from services.api.params import (
    HorizonFilter,
    HorizonQuery,
    IntervalQuery,
    LevelQuery,
    PagingQuery,
    SymbolPath,
)
from services.api.queries import predictions as queries
from services.api.queries.assets import known_symbol
from services.api.schemas import Accuracy, ModelAccuracy, Page, PredictionHistoryItem
from services.api.state import ApiState
from services.common.cache import prediction_key, status_key
from services.common.errors import ApiError, insufficient_history
from services.common.metrics import CACHE_REQUESTS
from services.common.schemas import PredictionRecord, PredictionStatus
from services.common.staleness import with_freshness

router = APIRouter(prefix="/api/v1/predictions", tags=["predictions"], route_class=GuardedRoute)

NO_STORE = {"Cache-Control": "no-store"}
_HIT = CACHE_REQUESTS.labels("api", "hit")
_MISS = CACHE_REQUESTS.labels("api", "miss")


def _check_horizon(state: ApiState, interval: str, horizon: int) -> None:
    limit = state.settings.horizons_1h if interval == "1h" else state.settings.horizons_1d
    if horizon > limit:
        raise ApiError(
            "ERR_VAL_001",
            f"horizon must be between 1 and {limit} for interval {interval}",
            {"field": "horizon", "max": limit},
        )


def _check_level(state: ApiState, level: float | None) -> float | None:
    """None for the default level (the cached bytes answer as they are), else the level."""
    if level is None or abs(level - state.settings.forecast_default_level) < 1e-9:
        return None
    offered = state.settings.offered_levels()
    if all(abs(level - level_offered) > 1e-9 for level_offered in offered):
        raise ApiError(
            "ERR_VAL_001",
            f"level {level:g} is not offered; offered levels: "
            + ", ".join(f"{level_offered:g}" for level_offered in offered),
            {"field": "level", "offered": list(offered)},
        )
    return level


def _at_level(record: PredictionRecord, level: float) -> bytes:
    try:
        return record.at_level(level).model_dump_json().encode()
    except KeyError:  # a forecast stored before this level was offered
        raise ApiError(
            "ERR_PRED_003",
            f"the latest forecast has no interval at level {level:g}",
            {"level": level},
            headers={"Retry-After": "60"},
        ) from None


def _refuse_if_insufficient(status: PredictionStatus | None) -> None:
    if status is not None and status.status == "insufficient_history":
        raise insufficient_history(status.required_days or 0, status.available_days or 0)


def _latest(engine: Engine, symbol: str, interval: str, horizon: int) -> queries.Latest:
    with engine.connect() as conn:
        return queries.latest(conn, symbol, interval, horizon)


@router.get(
    "/{symbol}",
    summary="Latest forecast for a symbol, interval and horizon",
    response_model=None,
    responses={
        200: {"description": "the forecast with its provenance", "model": PredictionRecord},
    },
    openapi_extra={
        **requires("predictions:read", "ERR_PRED_001", "ERR_PRED_002", "ERR_PRED_003"),
        "x-cache": "redis prediction:{symbol}:{interval}:{horizon}",
    },
)
async def get_prediction(
    request: Request,
    symbol: SymbolPath,
    interval: IntervalQuery = "1d",
    horizon: HorizonQuery = 1,
    level: LevelQuery = None,
) -> Response:
    # The hot path (see bench/api_cached_prediction): GuardedRoute already authenticated,
    # authorized and rate-limited the caller (requires() above); no dependency is solved.
    # A cache entry expires one bar after the next close, so a cached forecast is never
    # stale; the database path marks a stopped feed's forecast stale.
    state: ApiState = request.app.state.api
    _check_horizon(state, interval, horizon)
    wanted = _check_level(state, level)
    key = prediction_key(symbol, interval, horizon)
    admission = await state.gate.read(key, status_key(symbol, interval))
    if admission.cached is not None:
        _HIT.inc()
        body = admission.cached
        if wanted is not None:
            body = _at_level(PredictionRecord.model_validate_json(body), wanted)
        return Response(body, media_type="application/json", headers=NO_STORE)
    _MISS.inc()
    if admission.status is not None:
        _refuse_if_insufficient(PredictionStatus.model_validate_json(admission.status))

    latest = await run_in_threadpool(_latest, state.engine, symbol, interval, horizon)
    if not latest.known:
        raise unknown_symbol(symbol)
    record = latest.record
    status = latest.status
    if status is not None and (
        record is None
        or (latest.status_updated_at is not None and latest.status_updated_at > record.generated_at)
    ):
        _refuse_if_insufficient(status)
    if record is None:
        details = {"symbol": symbol, "interval": interval, "horizon": horizon}
        if status is not None and status.detail:
            details["reason"] = status.detail
        raise ApiError("ERR_PRED_003", details=details, headers={"Retry-After": "60"})
    record = with_freshness(
        record, datetime.now(UTC), state.settings.prediction_stale_after_intervals
    )
    body = record.model_dump_json().encode()
    if admission.redis_ok and state.settings.api_miss_cache_ttl_s > 0:
        await state.gate.cache_if_absent(key, body, state.settings.api_miss_cache_ttl_s)
    if wanted is not None:
        body = _at_level(record, wanted)
    return Response(body, media_type="application/json", headers=NO_STORE)


@router.get(
    "/{symbol}/history",
    summary="Past forecasts, newest first, with their outcome once known",
    response_model=Page[PredictionHistoryItem],
    openapi_extra=requires("predictions:read", "ERR_PRED_002"),
)
def prediction_history(
    conn: ConnDep,
    paging: PagingQuery,
    symbol: SymbolPath,
    interval: IntervalQuery = "1d",
    horizon: HorizonFilter = None,
    start: Annotated[datetime | None, Query(description="as_of >= start")] = None,
    end: Annotated[datetime | None, Query(description="as_of < end")] = None,
) -> Page[PredictionHistoryItem]:
    total, rows = queries.history(
        conn,
        known_symbol(conn, symbol),
        interval,
        horizon,
        paging,
        start=start,
        end=end,
    )
    items = [PredictionHistoryItem.model_validate(row) for row in rows]
    return Page[PredictionHistoryItem].of(items, total, paging)


@router.get(
    "/{symbol}/accuracy",
    summary="Error of served forecasts against actual prices (MAE, MAPE, MASE, coverage)",
    response_model=Accuracy,
    openapi_extra=requires("predictions:read", "ERR_PRED_002"),
)
def prediction_accuracy(
    conn: ConnDep,
    symbol: SymbolPath,
    interval: IntervalQuery = "1d",
    horizon: HorizonFilter = None,
    window_days: Annotated[int, Query(ge=1, le=3650)] = 30,
) -> Accuracy:
    overall, per_model = queries.accuracy(
        conn, known_symbol(conn, symbol), interval, horizon, window_days
    )
    return Accuracy(
        symbol=symbol,
        interval=interval,
        horizon=horizon,
        window_days=window_days,
        overall=ModelAccuracy.model_validate(overall),
        by_model=[ModelAccuracy.model_validate(row) for row in per_model],
    )
