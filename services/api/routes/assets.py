"""Assets (paginated, filterable)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from services.api.core.errors import unknown_symbol
from services.api.deps import ConnDep, GuardedRoute, requires
from services.api.params import PagingQuery, SymbolPath
from services.api.queries import assets as queries
from services.api.schemas import Asset, Page

router = APIRouter(prefix="/api/v1/assets", tags=["assets"], route_class=GuardedRoute)


@router.get(
    "",
    summary="List assets",
    response_model=Page[Asset],
    openapi_extra=requires("prices:read"),
)
def list_assets(
    conn: ConnDep,
    paging: PagingQuery,
    active: bool | None = None,
    asset_class: Annotated[str | None, Query(max_length=32)] = None,
    q: Annotated[str | None, Query(max_length=64, description="symbol or name contains")] = None,
) -> Page[Asset]:
    total, rows = queries.list_assets(
        conn, paging, active=active, asset_class=asset_class, search=q
    )
    return Page[Asset].of([Asset.model_validate(row) for row in rows], total, paging)


@router.get(
    "/{symbol}",
    summary="One asset",
    response_model=Asset,
    openapi_extra=requires("prices:read", "ERR_PRED_002"),
)
def get_asset(conn: ConnDep, symbol: SymbolPath) -> Asset:
    row = queries.get_asset(conn, symbol)
    if row is None:
        raise unknown_symbol(symbol)
    return Asset.model_validate(row)
