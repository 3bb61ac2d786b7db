"""Model registry (versions, champions; never the artifact bytes) and retrain requests."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.concurrency import run_in_threadpool

from services.api.core.errors import error_schema
from services.api.deps import Caller, ConnDep, GuardedRoute, requires
from services.api.params import IntervalFilter, PagingQuery, SymbolQuery
from services.api.queries import models as queries
from services.api.queries.assets import known_symbol
from services.api.schemas import ModelVersion, Page, RetrainRequestIn, RetrainRequestOut
from services.api.state import ApiState
from services.common.metrics import RETRAIN_REQUESTS

router = APIRouter(prefix="/api/v1/models", tags=["models"], route_class=GuardedRoute)


@router.get(
    "",
    summary="Model versions, newest first",
    response_model=Page[ModelVersion],
    openapi_extra=requires("models:read"),
)
def list_models(
    conn: ConnDep,
    paging: PagingQuery,
    symbol: SymbolQuery = None,
    model: Annotated[str | None, Query(max_length=32)] = None,
    status: Annotated[
        Literal["candidate", "champion", "retired", "rejected"] | None, Query()
    ] = None,
    interval: IntervalFilter = None,
) -> Page[ModelVersion]:
    total, rows = queries.list_versions(
        conn, paging, symbol=symbol, model=model, status=status, interval=interval
    )
    return Page[ModelVersion].of([ModelVersion.model_validate(row) for row in rows], total, paging)


@router.get(
    "/champions",
    summary="Current champion per model, scope and interval",
    response_model=list[ModelVersion],
    openapi_extra=requires("models:read"),
)
def list_champions(
    conn: ConnDep,
    symbol: SymbolQuery = None,
    interval: IntervalFilter = None,
) -> list[ModelVersion]:
    rows = queries.champions(conn, symbol, interval)
    return [ModelVersion.model_validate(row) for row in rows]


@router.get(
    "/{version_id}",
    summary="One model version",
    response_model=ModelVersion,
    responses={404: {**error_schema("ERR_PRED_002"), "description": "no such model version"}},
    openapi_extra=requires("models:read"),
)
def get_model(
    conn: ConnDep,
    version_id: Annotated[int, Path(ge=1, le=2**62)],
) -> ModelVersion:
    row = queries.get_version(conn, version_id)
    if row is None:
        raise HTTPException(404, "No such model version")
    return ModelVersion.model_validate(row)


def _queue(state: ApiState, body: RetrainRequestIn, by: str) -> tuple[int, str, bool]:
    symbol = body.symbol.upper() if body.symbol else None
    with state.engine.connect() as conn:
        if symbol is not None:
            known_symbol(conn, symbol)
        result = queries.request_retrain(conn, symbol, body.interval, body.reason, by)
        conn.commit()
        return result


@router.post(
    "/retrain",
    status_code=202,
    summary="Queue a retrain (one open request per symbol and interval)",
    response_model=RetrainRequestOut,
    openapi_extra=requires("models:write", "ERR_PRED_002"),
)
async def request_retrain(
    request: Request, body: RetrainRequestIn, principal: Caller
) -> RetrainRequestOut:
    state: ApiState = request.app.state.api
    request_id, status, created = await run_in_threadpool(_queue, state, body, principal.subject)
    symbol = body.symbol.upper() if body.symbol else None
    if created:
        RETRAIN_REQUESTS.labels("api").inc()
        await state.events.retrain_requested(
            request_id, symbol, body.interval, body.reason, principal.subject
        )
    return RetrainRequestOut(
        request_id=request_id, status=status, symbol=symbol, interval=body.interval, created=created
    )
