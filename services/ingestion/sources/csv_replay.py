"""CSV replay: rows of a price file as raw ticks, a chunk per fetch.

Columns (case-insensitive): a time column (``ts``, ``timestamp``, ``time``, ``date`` or
``datetime``), a price column (``price`` or ``close``), optional ``volume`` and ``symbol`` (else
the symbol given). A row without a volume is a quote (a close price, no trade). Values are
passed on as text: validation parses and judges them like any other source's.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from services.ingestion.sources.base import RawTick, Source

TIME_COLUMNS = ("ts", "timestamp", "time", "datetime", "date")
PRICE_COLUMNS = ("price", "close")


def _pick(header: dict[str, str], names: tuple[str, ...]) -> str | None:
    for name in names:
        if name in header:
            return header[name]
    return None


def read_rows(handle: IO[str], symbol: str | None, source: str = "csv") -> Iterator[RawTick]:
    reader = csv.DictReader(handle)
    fields = reader.fieldnames or []
    header = {name.strip().lower(): name for name in fields}
    time_col = _pick(header, TIME_COLUMNS)
    price_col = _pick(header, PRICE_COLUMNS)
    if time_col is None or price_col is None:
        raise ValueError(
            f"CSV needs a time column ({'/'.join(TIME_COLUMNS)}) and a price column "
            f"({'/'.join(PRICE_COLUMNS)}); found {fields}"
        )
    volume_col = header.get("volume")
    symbol_col = header.get("symbol")
    for row in reader:
        ts = (row.get(time_col) or "").strip()
        if len(ts) == 10 and ts[4] == "-":  # a date: the day's bucket start, UTC
            ts += "T00:00:00+00:00"
        volume = (row.get(volume_col) or "").strip() if volume_col else ""
        tick: RawTick = {
            "symbol": ((row.get(symbol_col) or "").strip() if symbol_col else "") or symbol,
            "ts": ts or None,
            "price": (row.get(price_col) or "").strip() or None,
            "source": source,
        }
        if volume:
            tick["volume"] = volume
        else:
            tick["kind"] = "quote"
        yield tick


class CsvReplaySource(Source):
    name = "csv"

    def __init__(
        self,
        path: Path,
        symbol: str | None = None,
        chunk: int = 1000,
        interval_s: float = 0.0,
        source: str = "csv",
    ) -> None:
        self.path = path
        self.chunk = chunk
        self.interval_s = interval_s
        self._handle = path.open(newline="", encoding="utf-8")
        self._rows = read_rows(self._handle, symbol, source)

    async def fetch(self) -> list[RawTick]:
        out: list[RawTick] = []
        for row in self._rows:
            out.append(row)
            if len(out) >= self.chunk:
                return out
        self.exhausted = True
        self._handle.close()
        return out

    async def close(self) -> None:
        self._handle.close()
