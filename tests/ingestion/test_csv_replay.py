from __future__ import annotations

from pathlib import Path

import pytest

from services.common.schemas import Tick
from services.ingestion.sources.csv_replay import CsvReplaySource
from services.ingestion.validation import Rejection, Validator


async def test_replay_in_chunks_then_exhausted(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text(
        "Date,Open,Close,Volume\n2024-01-01,1,10.5,100\n2024-01-02,1,11,\n2024-01-03,1,-2,5\n"
    )
    src = CsvReplaySource(path, "ABC-USD", chunk=2)
    first = await src.fetch()
    assert len(first) == 2 and not src.exhausted
    second = await src.fetch()
    assert len(second) == 1 and src.exhausted
    v = Validator()
    results = [v.validate(t) for t in first + second]
    assert isinstance(results[0], Tick) and results[0].volume == 100.0
    assert results[0].ts.isoformat() == "2024-01-01T00:00:00+00:00"
    assert isinstance(results[1], Tick) and results[1].volume == 0.0  # a close without volume
    assert isinstance(results[2], Rejection) and results[2].reason == "non_positive_price"


def test_file_without_price_column_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("when,value\n1,2\n")
    src = CsvReplaySource(path, "ABC-USD")
    with pytest.raises(ValueError, match="price column"):
        next(iter(src._rows))
