"""The publish path's per-tick work, done a batch at a time: validation and the wire form.

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
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

import orjson

from services.common.kafka import dumps
from services.ingestion.validation import (
    _OK_SOURCES,
    _OK_SYMBOLS,
    Rejection,
    Tick,
    Validator,
    _trade_id_ok,
)

_new = tuple.__new__
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
    validate = validator.validate
    guard = validator.guard
    pct, last_good, pending = guard.pct, guard.last_good, guard._pending
    symbols, sources, inf = _OK_SYMBOLS, _OK_SOURCES, math.inf
    checked: object = None  # the last datetime found aware UTC and within the limit
    for p in payloads:
        if type(p) is dict and "kind" not in p:
            try:
                symbol, source, price, volume, ts = (
                    p["symbol"],
                    p["source"],
                    p["price"],
                    p["volume"],
                    p["ts"],
                )
            except KeyError:
                price = None  # the full check says which is missing
            tid = p.get("trade_id", "")
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
        result = validate(p, limit)
        if isinstance(result, Tick):
            good.append(result)
            if records:
                out_keys.append(result.symbol.encode())
                docs.append(result.wire())
        else:
            bad.append(result)
    if records:
        out_values.extend(each_json(docs))
    return good, bad


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
        return [dumps(d) for d in docs]
    return [parts[0], *[_START + p for p in parts[1:]]]


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
