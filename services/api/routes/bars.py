"""OHLCV bars by interval (price_1m / price_1h / price_1d via ``services.common.bars``)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query

from services.api.core.errors import responses
from services.api.deps import ConnDep, GuardedRoute, PricesReader
from services.api.params import BarIntervalQuery, SymbolPath
from services.api.queries import assets as asset_queries
from services.api.schemas import Bar, Bars
from services.common.bars import get_bars as query_bars
from services.common.errors import PricecastError

router = APIRouter(prefix="/api/v1/assets", tags=["bars"], route_class=GuardedRoute)
_COMMON = ("ERR_AUTH_001", "ERR_AUTH_002", "ERR_RATE_001", "ERR_VAL_001", "ERR_DB_001")


@router.get(
    "/{symbol}/bars",
    summary="Price bars of a symbol, ascending by bucket",
    response_model=Bars,
    responses=responses(*_COMMON, "ERR_PRED_002"),
)
def get_bars(
    conn: ConnDep,
    symbol: SymbolPath,
    principal: PricesReader,
    interval: BarIntervalQuery = "1d",
    start: Annotated[datetime | None, Query(description="bucket >= start")] = None,
    end: Annotated[datetime | None, Query(description="bucket < end")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000, description="the most recent N bars")] = 500,
) -> Bars:
    symbol = symbol.upper()
    if start is not None and end is not None and start >= end:
        raise PricecastError("ERR_VAL_001", "start must be before end")
    if not asset_queries.asset_exists(conn, symbol):
        raise PricecastError("ERR_PRED_002", f"Unknown symbol {symbol}", {"symbol": symbol})
    bars = query_bars(conn, symbol, interval, start=start, end=end, limit=limit)
    return Bars(
        symbol=symbol,
        interval=interval,
        bars=[
            Bar(
                bucket=b.bucket.astimezone(UTC),
                open=b.open,
                high=b.high,
                low=b.low,
                close=b.close,
                volume=b.volume,
                trade_count=b.trade_count,
                vwap=b.vwap,
            )
            for b in bars
        ],
    )
