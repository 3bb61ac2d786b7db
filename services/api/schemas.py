"""Request and response bodies of the API (the prediction record itself is shared:
``services.common.schemas.PredictionRecord``)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, Field

from services.api.params import Paging
from services.common.bars import Bar as StoredBar
from services.common.schemas import Interval, PredictionRecord

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int
    skip: int
    limit: int

    @classmethod
    def of(cls, items: list[T], total: int, paging: Paging) -> Page[T]:
        """One page of ``total`` items, as ``paging`` asked for it."""
        return cls(items=items, total=total, skip=paging.skip, limit=paging.limit)


class TokenResponse(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 - not a secret
    expires_in: int
    scope: str
    refresh_token: str | None = None


class RevokeResponse(BaseModel):
    revoked: bool = True
    refresh_family_revoked: bool = False


class Jwk(BaseModel):
    kty: str
    kid: str
    alg: str
    use: str
    n: str
    e: str


class Jwks(BaseModel):
    keys: list[Jwk]


class Asset(BaseModel):
    symbol: str
    name: str
    asset_class: str
    currency: str
    active: bool
    first_seen: datetime | None = None


# The same bar as services.common.bars.Bar, in another role: that one is the query layer's
# row (a named tuple: cheap for a year of hourly bars, but an array in JSON); this one is the
# response schema (an object in JSON and OpenAPI). Bar.of turns the one into the other.
class Bar(BaseModel):
    """One OHLCV bar; bucket is the UTC start of its interval."""

    bucket: datetime
    open: float
    high: float
    low: float
    close: float
    volume: float
    trade_count: int | None = None
    vwap: float | None = None

    @classmethod
    def of(cls, bar: StoredBar) -> Bar:
        """The response form of a stored bar (its bucket in UTC)."""
        return cls(
            bucket=bar.bucket.astimezone(UTC),
            open=bar.open,
            high=bar.high,
            low=bar.low,
            close=bar.close,
            volume=bar.volume,
            trade_count=bar.trade_count,
            vwap=bar.vwap,
        )


class Bars(BaseModel):
    symbol: str
    interval: str
    bars: list[Bar]


class PredictionHistoryItem(PredictionRecord):
    """A stored forecast with its outcome once the target bar has closed."""

    actual_price: float | None = None
    abs_error: float | None = None
    naive_abs_error: float | None = None


class LevelAccuracy(BaseModel):
    """One row of the calibration table: a nominal level against what was observed."""

    level: float
    evaluated: int
    coverage: float | None = Field(None, description="share of actuals inside the interval")
    interval_score: float | None = Field(
        None, description="mean interval (Winkler) score, prices; lower is better"
    )
    msis: float | None = Field(
        None, description="interval score over the naive forecast's MAE on the same targets"
    )


class ModelAccuracy(BaseModel):
    model: str
    evaluated: int
    mae: float | None = None
    mape: float | None = Field(None, description="mean absolute percentage error, percent")
    mase: float | None = Field(None, description="MAE divided by the naive forecast's MAE")
    coverage: float | None = Field(None, description="share of actuals inside the 80% interval")
    by_level: list[LevelAccuracy] = Field(
        default_factory=list, description="calibration table: coverage per offered level"
    )


class Accuracy(BaseModel):
    symbol: str
    interval: Interval
    horizon: int | None
    window_days: int
    overall: ModelAccuracy
    by_model: list[ModelAccuracy]


# The same record as ml.registry.ModelVersion, in another role: that one is the registry's
# (its module loads forecasters: importing it would pull the model code into the API); this one
# is the response schema, read by the API's own query (services/api/queries/models.py).
class ModelVersion(BaseModel):
    """One model version of the registry (never the artifact bytes)."""

    id: int
    model: str
    scope: str
    interval: str
    version: int
    status: str
    data_start: datetime | None = None
    data_end: datetime | None = None
    metrics: dict[str, Any]
    params: dict[str, Any]
    checksum: str | None = None
    created_at: datetime
    promoted_at: datetime | None = None
    retired_at: datetime | None = None


class RetrainRequestIn(BaseModel):
    symbol: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$",
        description="omit for every eligible asset",
    )
    interval: Interval = "1d"
    reason: str = Field("api", min_length=1, max_length=200)


class RetrainRequestOut(BaseModel):
    request_id: int
    status: str
    symbol: str | None
    interval: str
    created: bool = Field(description="false when an open request already existed")
