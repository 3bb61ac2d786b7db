"""Path and query parameters shared by several routes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import Depends, Path, Query
from pydantic import AfterValidator

SYMBOL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$"


def _upper(symbol: str | None) -> str | None:
    return symbol.upper() if symbol is not None else None


# Symbols are stored upper-case: ``btc-usd`` in a path or query means ``BTC-USD``.
SymbolPath = Annotated[
    str,
    Path(pattern=SYMBOL_PATTERN, description="asset symbol, e.g. BTC-USD", examples=["BTC-USD"]),
    AfterValidator(str.upper),
]
SymbolQuery = Annotated[str | None, Query(pattern=SYMBOL_PATTERN), AfterValidator(_upper)]
IntervalQuery = Annotated[Literal["1h", "1d"], Query(description="bar interval of the forecast")]
BarIntervalQuery = Annotated[Literal["1m", "1h", "1d"], Query(description="bar interval")]
HorizonQuery = Annotated[int, Query(ge=1, le=168, description="steps ahead (bars)")]
HorizonFilter = Annotated[int | None, Query(ge=1, le=168)]
IntervalFilter = Annotated[Literal["1h", "1d"] | None, Query()]
Skip = Annotated[int, Query(ge=0, le=1_000_000)]
Limit = Annotated[int, Query(ge=1, le=1000)]


@dataclass(frozen=True, slots=True)
class Paging:
    """``skip`` and ``limit`` of a paginated listing, declared once for every such route."""

    skip: int
    limit: int


def _paging(skip: Skip = 0, limit: Limit = 100) -> Paging:
    return Paging(skip, limit)


PagingQuery = Annotated[Paging, Depends(_paging)]
LevelQuery = Annotated[
    float | None,
    Query(
        gt=0,
        lt=1,
        description="interval level in lower_bound/upper_bound (an offered one; default 0.8)",
        examples=[0.95],
    ),
]
