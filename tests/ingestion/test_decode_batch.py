"""The writer's batch decoder: the same verdict as the one-tick checks, wire timestamps passed
through as text only when they are in the exact wire form."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest
from ingest_helpers import raw_tick

from services.common.kafka import dumps
from services.common.schemas import Tick
from services.ingestion.batch import copy_line, decode_batch, is_wire_ts
from services.ingestion.validation import Rejection, ValidationFailed, check_fields, decode

LIMIT = datetime(2025, 6, 1, 12, 0, 5, tzinfo=UTC)


def tick(**over: object) -> dict[str, object]:
    return raw_tick("DB-USD", **over)


PAYLOADS: list[bytes | None] = [
    orjson.dumps(tick()),
    orjson.dumps(tick(ts="2025-06-01T11:59:00.250000Z")),
    orjson.dumps(tick(ts="2025-06-01T13:59:00+02:00")),  # valid, not the wire form
    orjson.dumps(tick(ts="2025-06-01T11:59:00.25Z")),  # valid, not the wire form
    orjson.dumps(tick(ts=1748779140)),  # epoch seconds
    orjson.dumps(tick(price="101.5", volume=2)),  # numbers as text / int
    orjson.dumps({**tick(), "kind": "quote", "volume": 0}),
    orjson.dumps({**tick(), "extra": "field"}),
    orjson.dumps(tick(ts="2025-06-01T12:00:05Z")),  # exactly at the limit
    orjson.dumps(tick(ts="2025-06-01T12:00:06Z")),  # future
    orjson.dumps(tick(ts="2025-13-01T11:59:00Z")),  # wire-shaped, no such month
    orjson.dumps(tick(ts="2025-06-01T11:59:00.1234567Z")),  # 7 fraction digits
    orjson.dumps(tick(price=-1.0)),
    orjson.dumps(tick(price=0.0)),
    orjson.dumps(tick(volume=0.0)),
    orjson.dumps(tick(symbol="bad symbol")),
    orjson.dumps(tick(source="Bad Source")),
    orjson.dumps({k: v for k, v in tick().items() if k != "price"}),
    orjson.dumps([1, 2, 3]),
    b"{not json",
    None,
]


def reference(raw: bytes | None) -> str | tuple[str, str | None]:
    """What the one-tick path says: the COPY line, or (reason, symbol)."""
    try:
        return copy_line(check_fields(decode(raw), limit=LIMIT))
    except ValidationFailed as exc:
        return (exc.reason, exc.symbol)


def verdicts(raws: list[bytes | None]) -> list[str | tuple[str, str | None]]:
    out = decode_batch(raws, LIMIT)
    result: list[str | tuple[str, str | None]] = [("?", None)] * len(raws)
    for i, row in zip(out.good, out.rows, strict=True):
        result[i] = row
    for i, rej in out.rejects:
        assert isinstance(rej, Rejection) and rej.payload == raws[i]
        result[i] = (rej.reason, rej.symbol)
    return result


def same_instant(a: str | tuple[str, str | None], b: str | tuple[str, str | None]) -> bool:
    """Equal verdicts; COPY lines may spell the same UTC instant differently."""
    if isinstance(a, tuple) or isinstance(b, tuple):
        return a == b
    fa, fb = a.split("\t"), b.split("\t")
    return (
        fa[0] == fb[0]
        and fa[2:] == fb[2:]
        and datetime.fromisoformat(fa[1]) == datetime.fromisoformat(fb[1])
    )


@pytest.mark.parametrize("warm", [False, True], ids=["symbol-new", "symbol-known"])
def test_same_verdict_as_the_one_tick_checks(warm: bool) -> None:
    if warm:  # the fast path needs the symbol and source seen once
        decode_batch([orjson.dumps(tick())], LIMIT)
    got = verdicts(PAYLOADS)
    want = [reference(raw) for raw in PAYLOADS]
    for raw, g, w in zip(PAYLOADS, got, want, strict=True):
        assert same_instant(g, w), (raw, g, w)
    reasons = {v[0] for v in got if isinstance(v, tuple)}
    assert reasons == {
        "future_timestamp",
        "invalid_timestamp",
        "non_positive_price",
        "missing_field",
        "non_positive_volume",
        "invalid_symbol",
        "invalid_source",
        "unknown_shape",
        "invalid_json",
    }


def test_wire_timestamps_pass_through_as_sent() -> None:
    t0 = datetime(2025, 3, 1, tzinfo=UTC)
    ticks = [
        Tick("WIRE-USD", t0 + timedelta(microseconds=us), 1.0 + us, 2.0, "test")
        for us in (0, 1, 250_000)
    ]
    raws: list[bytes | None] = [dumps(t.wire()) for t in ticks]
    decode_batch(raws, LIMIT)  # warm the symbol cache
    out = decode_batch(raws, LIMIT)
    assert out.good == [0, 1, 2] and not out.rejects
    for t, raw, row in zip(ticks, raws, out.rows, strict=True):
        wire_ts = orjson.loads(raw or b"")["ts"]
        assert is_wire_ts(wire_ts)
        symbol, ts, price, volume, source, trade_id = row.rstrip("\n").split("\t")
        assert ts == wire_ts and datetime.fromisoformat(ts) == t.ts
        assert (symbol, float(price), float(volume), source, trade_id) == (
            t.symbol,
            t.price,
            t.volume,
            t.source,
            "",
        )
    assert out.newest == {"WIRE-USD": ticks[-1].ts}


@pytest.mark.parametrize(
    ("ts", "wire"),
    [
        ("2025-01-01T00:00:00Z", True),
        ("2025-01-01T00:00:00.123456Z", True),
        ("2025-01-01T00:00:00+00:00", False),
        ("2025-01-01 00:00:00Z", False),
        ("2025-01-01T00:00:00.5Z", False),
        ("20250101T000000Z", False),
        ("2025-W01-1T00:00:00Z", False),
        ("2025-01-01T00:00:00.123456+00:00", False),
    ],
)
def test_is_wire_ts(ts: str, wire: bool) -> None:
    assert is_wire_ts(ts) is wire


def test_newest_per_symbol_whatever_the_order() -> None:
    raws: list[bytes | None] = [
        orjson.dumps(tick(symbol="NA-USD", ts="2025-06-01T11:00:00Z")),
        orjson.dumps(tick(symbol="NA-USD", ts="2025-06-01T11:30:00Z")),
        orjson.dumps(tick(symbol="NA-USD", ts="2025-06-01T10:00:00Z")),
        orjson.dumps(tick(symbol="NB-USD", ts="2025-06-01T09:00:00+00:00")),
    ]
    out = decode_batch(raws, LIMIT)
    assert out.newest == {
        "NA-USD": datetime(2025, 6, 1, 11, 30, tzinfo=UTC),
        "NB-USD": datetime(2025, 6, 1, 9, tzinfo=UTC),
    }
