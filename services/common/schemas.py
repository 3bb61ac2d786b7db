"""Wire formats shared by services: the tick on ``prices`` and the prediction record.

The prediction record is what the API returns, what Redis caches under
``prediction:{symbol}:{interval}:{horizon}`` and what ``predictions`` carries, byte for byte.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Literal, NamedTuple, NotRequired, get_type_hints

from pydantic import BaseModel, ConfigDict, TypeAdapter, field_validator
from typing_extensions import TypedDict

Interval = Literal["1h", "1d"]
ModelName = Literal["lstm", "arima", "naive"]


class Tick(NamedTuple):
    """One validated tick on the ``prices`` topic (key: symbol): the one tick type.

    A plain tuple (not a pydantic model): the publisher and the writer handle one per message,
    and :mod:`services.ingestion.validation` builds it after its own checks. Readers of
    ``prices`` that want pydantic's field checks use :meth:`from_json`.
    """

    symbol: str
    ts: datetime  # aware, UTC
    price: float
    volume: float
    source: str
    trade_id: str = ""  # the venue's trade id; absent (empty) for ticks without one

    def wire(self) -> dict[str, Any]:
        """The ``prices`` message (``services.common.kafka.dumps`` of it); no empty trade id."""
        out: dict[str, Any] = {
            "symbol": self.symbol,
            "ts": self.ts,
            "price": self.price,
            "volume": self.volume,
            "source": self.source,
        }
        if self.trade_id:
            out["trade_id"] = self.trade_id
        return out

    @classmethod
    def from_json(cls, raw: bytes | str) -> Tick:
        """A tick from JSON with pydantic's (lax) field checks; unknown fields are ignored.
        Raises ``pydantic.ValidationError``."""
        return cls(**_TICK_FIELDS.validate_json(raw))

    def to_json(self) -> str:
        """JSON of every field, ``trade_id`` included, timestamps as pydantic writes them."""
        return _TICK_FIELDS.dump_json(self._asdict()).decode()


def _fields_of(tuple_type: type[Tick]) -> TypeAdapter[dict[str, Any]]:
    """Pydantic's view of ``tuple_type``'s fields: a TypedDict derived from it (defaulted
    fields not required)."""
    fields = {
        name: NotRequired[hint] if name in tuple_type._field_defaults else hint
        for name, hint in get_type_hints(tuple_type).items()
    }
    return TypeAdapter(TypedDict(f"{tuple_type.__name__}Fields", fields))  # type: ignore[operator]


_TICK_FIELDS = _fields_of(Tick)


class IntervalBand(BaseModel):
    """The central prediction interval of one offered level."""

    model_config = ConfigDict(frozen=True)

    level: float
    lower: float
    upper: float


class PredictionRecord(BaseModel):
    """One forecast with its provenance (docs/architecture.md, "Prediction").

    ``lower_bound``/``upper_bound`` are the interval at ``confidence_level`` (the default
    level, or the one a client asked for with ``?level=``); ``intervals`` has every offered
    level. ``stale``: the as-of bar closed more than ``prediction_stale_after_intervals``
    intervals before ``as_of_age_s`` was measured (when the record was produced or read).
    """

    model_config = ConfigDict(frozen=True)

    symbol: str
    interval: Interval
    horizon: int
    as_of: datetime  # the bar the forecast was made from (bucket start)
    target_time: datetime  # bucket start of the forecast bar
    predicted_price: float
    lower_bound: float
    upper_bound: float
    confidence_level: float = 0.8
    model: ModelName
    model_version: str
    fallback_reason: str | None = None
    generated_at: datetime
    intervals: tuple[IntervalBand, ...] = ()
    stale: bool = False
    as_of_age_s: float | None = None

    @field_validator("intervals", mode="before")
    @classmethod
    def _no_intervals(cls, value: object) -> object:
        """Rows stored before levels existed have NULL (jsonb text is parsed)."""
        if value is None:
            return ()
        if isinstance(value, str | bytes):
            return json.loads(value)
        return value

    def at_level(self, level: float) -> PredictionRecord:
        """This record with ``level``'s interval in the bounds; KeyError when absent."""
        if abs(level - self.confidence_level) < 1e-9:
            return self
        for band in self.intervals:
            if abs(band.level - level) < 1e-9:
                return self.model_copy(
                    update={
                        "lower_bound": band.lower,
                        "upper_bound": band.upper,
                        "confidence_level": band.level,
                    }
                )
        raise KeyError(level)


class PredictionStatus(BaseModel):
    """Why there is no forecast for a symbol/interval (cached at ``prediction-status:...``)."""

    symbol: str
    interval: Interval
    status: Literal["ok", "insufficient_history", "error"]
    required_days: int | None = None
    available_days: int | None = None
    detail: str | None = None
