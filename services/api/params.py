"""Path and query parameters shared by several routes."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import Path, Query

SYMBOL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$"

SymbolPath = Annotated[
    str,
    Path(pattern=SYMBOL_PATTERN, description="asset symbol, e.g. BTC-USD", examples=["BTC-USD"]),
]
IntervalQuery = Annotated[Literal["1h", "1d"], Query(description="bar interval of the forecast")]
BarIntervalQuery = Annotated[Literal["1m", "1h", "1d"], Query(description="bar interval")]
HorizonQuery = Annotated[int, Query(ge=1, le=168, description="steps ahead (bars)")]
Skip = Annotated[int, Query(ge=0, le=1_000_000)]
Limit = Annotated[int, Query(ge=1, le=1000)]
LevelQuery = Annotated[
    float | None,
    Query(
        gt=0,
        lt=1,
        description="interval level in lower_bound/upper_bound (an offered one; default 0.8)",
        examples=[0.95],
    ),
]
