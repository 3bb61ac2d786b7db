"""Both paths' per-tick work, done a batch at a time: validation, the wire form, COPY lines.

A busy stream hands the publisher tens of thousands of raw ticks per call. Per tick,
:meth:`Validator.validate <services.ingestion.validation.Validator.validate>` makes three
Python calls (validate, ``check_fields``, the jump guard) and ``dumps(tick.wire())`` builds a
dict and formats the timestamp again. Here one loop does both for the common tick, with the
same checks and the same result:

* :func:`validate_batch`: a plain dict with a known-good symbol and source, float price and
  volume in (0, inf), an aware UTC ``datetime`` not beyond the limit (the ticks of one
  millisecond share one datetime, checked once), a well-formed trade id or none, and a price
  within the jump guard of the symbol's last good price becomes its :class:`Tick` here;
  anything else (valid or not) goes through ``Validator.validate``, in order, so every
  rejection keeps its reason;
* :func:`wire_records`: (key, value) for ``prices``, byte for byte what
  ``(t.symbol.encode(), dumps(t.wire()))`` gives, with each distinct timestamp formatted (by
  orjson, as ``dumps`` does) once.

The write path's: :func:`decode_batch` decodes and validates consumed ``prices`` messages into
``price_ticks`` COPY lines (:func:`copy_line`), the common message's timestamp passed through
as it came. The wire form of ``ts`` (``services.common.kafka.dumps``: orjson, UTC, "Z") is
"YYYY-MM-DDTHH:MM:SSZ" or "YYYY-MM-DDTHH:MM:SS.ffffffZ" (:func:`is_wire_ts`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any

import orjson

from services.common.kafka import dumps
from services.common.schemas import Tick
from services.ingestion.validation import (
    _OK_SOURCES,
    _OK_SYMBOLS,
    Rejection,
    ValidationFailed,
    Validator,
    _trade_id_ok,
    check_fields,
    decode,
)

_new = tuple.__new__
_FIELDS = itemgetter("symbol", "source", "price", "volume", "ts")
_START = b'{"symbol":'
_NEXT = b"," + _START


def validate_batch(
    validator: Validator,
    payloads: Iterable[Any],
    limit: datetime,
    wire_out: tuple[list[bytes], list[bytes]] | None = None,
) -> tuple[list[Tick], list[Rejection]]:
    """(good ticks, rejections), each in input order: what ``validator.validate`` gives for
    each payload (the jump guard's state advances the same way). With ``wire_out`` (keys,
    values), the :func:`wire_records` of the good ticks are appended to those two lists in the
    same pass (two lists of bytes, not a list of pairs: nothing the cyclic GC has to scan while
    a batch is alive)."""
    records = wire_out is not None
    out_keys, out_values = wire_out if wire_out is not None else ([], [])
    docs: list[dict[str, Any]] = []
    key_of: dict[str, bytes] = {}
    text = ""
    good: list[Tick] = []
    bad: list[Rejection] = []
    validate, guard = validator.validate, validator.guard
    pct, last_good, pending = guard.pct, guard.last_good, guard._pending
    symbols, sources, inf, fields = _OK_SYMBOLS, _OK_SOURCES, math.inf, _FIELDS
    checked: object = None  # the last datetime found aware UTC and within the limit
    for payload in payloads:
        if type(payload) is dict and "kind" not in payload:
            try:
                symbol, source, price, volume, ts = fields(payload)
            except KeyError:
                price = None  # the full check says which is missing
            tid = payload.get("trade_id", "")
            if (
                type(price) is float
                and type(volume) is float
                and 0.0 < price < inf
                and 0.0 < volume < inf
                and type(symbol) is str
                and symbol in symbols
                and type(source) is str
                and source in sources
                and type(tid) is str
                and (
                    (tid.isascii() and tid.isdigit() and len(tid) <= 64)
                    or not tid
                    or _trade_id_ok(tid)
                )
            ):
                if ts is not checked and type(ts) is datetime and ts.tzinfo is UTC and ts <= limit:
                    checked = ts
                    if records:
                        text = dumps(ts)[1:-1].decode()
                if ts is checked and (  # the jump guard's common case, inlined
                    pct <= 0
                    or (last := last_good.get(symbol)) is None
                    or abs(price - last) / last * 100.0 <= pct
                ):
                    if pct > 0:
                        last_good[symbol] = price
                        if pending:
                            pending.pop(symbol, None)
                    good.append(_new(Tick, (symbol, ts, price, volume, source, tid)))
                    if records:
                        key = key_of.get(symbol)
                        if key is None:
                            key = key_of[symbol] = symbol.encode()
                        wire = {
                            "symbol": symbol,
                            "ts": text,
                            "price": price,
                            "volume": volume,
                            "source": source,
                        }
                        if tid:
                            wire["trade_id"] = tid
                        out_keys.append(key)
                        docs.append(wire)
                    continue
        _validated(validate(payload, limit), good, bad, (out_keys, docs) if records else None)
    if records:
        out_values.extend(each_json(docs))
    return good, bad


def _validated(
    result: Tick | Rejection,
    good: list[Tick],
    bad: list[Rejection],
    wire_out: tuple[list[bytes], list[dict[str, Any]]] | None,
) -> None:
    """:func:`validate_batch`'s slow path: file ``result`` of the full validation (keys and
    wire docs of a good tick too, with ``wire_out``)."""
    if isinstance(result, Tick):
        good.append(result)
        if wire_out is not None:
            wire_out[0].append(result.symbol.encode())
            wire_out[1].append(result.wire())
    else:
        bad.append(result)


def each_json(docs: list[dict[str, Any]]) -> list[bytes]:
    """``[dumps(d) for d in docs]`` for wire-form docs (each starts with ``"symbol"``), with
    one orjson call for them all, cut at the record boundaries: a validated tick's strings
    (symbol, source, trade id, timestamp) hold no brace or quote, so ``,{"symbol":`` only
    ever starts the next doc. (Many small ``orjson.dumps`` results kept alive at once are
    several times slower to allocate than one large one cut up.)"""
    if not docs:
        return []
    parts = dumps(docs)[1:-1].split(_NEXT)
    if len(parts) != len(docs):  # not wire-form docs after all: one at a time
        return [dumps(doc) for doc in docs]
    return [parts[0], *[_START + part for part in parts[1:]]]


def wire_records(ticks: Iterable[Tick]) -> Iterator[tuple[bytes, bytes]]:
    """(symbol key, JSON value) of each tick, as published to ``prices`` (one at a time: each
    value is copied into its record batch and freed)."""
    keys: dict[str, bytes] = {}
    encode = orjson.dumps
    last_ts: object = None
    text = ""
    for symbol, ts, price, volume, source, tid in ticks:
        if ts is not last_ts:
            last_ts, text = ts, dumps(ts)[1:-1].decode()
        key = keys.get(symbol)
        if key is None:
            key = keys[symbol] = symbol.encode()
        if tid:
            value = encode(
                {
                    "symbol": symbol,
                    "ts": text,
                    "price": price,
                    "volume": volume,
                    "source": source,
                    "trade_id": tid,
                }
            )
        else:
            value = encode(
                {"symbol": symbol, "ts": text, "price": price, "volume": volume, "source": source}
            )
        yield key, value


def is_wire_ts(ts: str) -> bool:
    """``ts`` has the wire form's separators where they belong (positions 4, 7, 10, 13, 16,
    19 and the final "Z"). If ``datetime.fromisoformat`` also accepts it, the rest are ASCII
    digits and PostgreSQL reads the same instant from the text."""
    length = len(ts)
    seps = ts[4:20:3]
    return (length == 20 and seps == "--T::Z") or (
        length == 27 and seps == "--T::." and ts[26] == "Z"
    )


def copy_line(tick: Tick) -> str:
    """One ``price_ticks`` row in COPY text format (symbol, ts, price, volume, source,
    trade_id).

    Symbol, source and trade id passed their format checks (no tab, newline or backslash),
    so nothing needs escaping; ``repr`` of a float is its shortest exact text."""
    return (
        f"{tick.symbol}\t{tick.ts.isoformat()}\t{tick.price!r}\t{tick.volume!r}"
        f"\t{tick.source}\t{tick.trade_id}\n"
    )


@dataclass(slots=True)
class DecodedBatch:
    """A consumed batch after the writer's validation, ready for COPY.

    ``rows[k]`` is the COPY text line of the record at index ``good[k]`` of the batch (record
    order kept); ``rejects`` are (index, why) of the poison records; ``newest`` is the newest
    timestamp per symbol among the good ticks (what the staleness tracker needs).
    """

    rows: list[str] = field(default_factory=list)
    good: list[int] = field(default_factory=list)
    rejects: list[tuple[int, Rejection]] = field(default_factory=list)
    newest: dict[str, datetime] = field(default_factory=dict)


def decode_batch(values: Sequence[bytes | None], limit: datetime) -> DecodedBatch:
    """Decode and validate consumed ``prices`` messages (the writer's per-record work).

    Exactly the checks of :func:`check_fields` after :func:`decode`. The common message (the
    wire form :class:`Tick` is published in: the five fields, plus a well-formed
    ``trade_id`` or none, float price and volume, a known-good symbol and source, ``ts`` in
    wire form (:func:`is_wire_ts`) and not beyond ``limit``) becomes its COPY line directly,
    its ``ts`` text passed through (it names the instant that ``datetime.fromisoformat``
    parsed, and PostgreSQL reads it the same way); every other message, valid or not, takes
    the full check and its line is formatted from the normalised :class:`Tick`.
    """
    out = DecodedBatch()
    rows, good, newest = out.rows, out.good, out.newest
    loads, fromiso = orjson.loads, datetime.fromisoformat
    ok_symbols, ok_sources, inf = _OK_SYMBOLS, _OK_SOURCES, math.inf
    for index, raw in enumerate(values):
        if type(raw) is bytes:
            try:
                doc = loads(raw)
            except orjson.JSONDecodeError:
                doc = None
            n_fields = len(doc) if type(doc) is dict else 0
            tid = doc.get("trade_id", "") if n_fields == 6 else ""
            if n_fields == 5 or (n_fields == 6 and type(tid) is str and _trade_id_ok(tid)):
                symbol = doc.get("symbol")
                ts = doc.get("ts")
                price = doc.get("price")
                volume = doc.get("volume")
                source = doc.get("source")
                if (
                    type(symbol) is str
                    and type(source) is str
                    and type(price) is float
                    and type(volume) is float
                    and type(ts) is str
                    and 0.0 < price < inf
                    and 0.0 < volume < inf
                    and symbol in ok_symbols
                    and source in ok_sources
                    and (  # is_wire_ts, inlined
                        ((length := len(ts)) == 20 and ts[4:20:3] == "--T::Z")
                        or (length == 27 and ts[4:20:3] == "--T::." and ts[26] == "Z")
                    )
                ):
                    dt: datetime | None
                    try:
                        dt = fromiso(ts)  # aware UTC ("Z"); may still be no real date
                    except ValueError:
                        dt = None  # the full check says why
                    if dt is not None and dt <= limit:
                        rows.append(f"{symbol}\t{ts}\t{price!r}\t{volume!r}\t{source}\t{tid}\n")
                        good.append(index)
                        last = newest.get(symbol)
                        if last is None or dt > last:
                            newest[symbol] = dt
                        continue
        try:
            tick = check_fields(decode(raw), limit=limit)
        except ValidationFailed as exc:
            out.rejects.append((index, Rejection(exc.reason, exc.detail, raw, exc.symbol)))
            continue
        rows.append(copy_line(tick))
        good.append(index)
        last = newest.get(tick.symbol)
        if last is None or tick.ts > last:
            newest[tick.symbol] = tick.ts
    return out
