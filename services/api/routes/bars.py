"""OHLCV bars by interval (price_1m / price_1h / price_1d via ``services.common.bars``)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query

from services.api.deps import ConnDep, GuardedRoute, requires
from services.api.params import BarIntervalQuery, SymbolPath
from services.api.queries.assets import known_symbol
from services.api.schemas import Bar, Bars
from services.common.bars import get_bars as query_bars
from services.common.errors import ApiError

router = APIRouter(prefix="/api/v1/assets", tags=["bars"], route_class=GuardedRoute)


@router.get(
    "/{symbol}/bars",
    summary="Price bars of a symbol, ascending by bucket",
    response_model=Bars,
    openapi_extra=requires("prices:read", "ERR_PRED_002"),
)
def get_bars(
    conn: ConnDep,
    symbol: SymbolPath,
    interval: BarIntervalQuery = "1d",
    start: Annotated[datetime | None, Query(description="bucket >= start")] = None,
    end: Annotated[datetime | None, Query(description="bucket < end")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000, description="the most recent N bars")] = 500,
) -> Bars:
    if start is not None and end is not None and start >= end:
        raise ApiError("ERR_VAL_001", "start must be before end")
    bars = query_bars(conn, known_symbol(conn, symbol), interval, start=start, end=end, limit=limit)
    return Bars(symbol=symbol, interval=interval, bars=[Bar.of(bar) for bar in bars])
