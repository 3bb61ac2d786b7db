"""Tick validation: the one gate every tick passes before ``prices`` (and again in the writer).

A raw tick is a mapping (or JSON bytes) with ``symbol``, ``ts``, ``price``, ``volume`` and
``source``; an optional ``kind`` of ``"quote"`` marks a price without a trade, whose volume may
be 0 (or absent). Everything else must hold:

* required fields present with the right types (``missing_field``, ``invalid_type``);
* price finite and > 0 (``non_finite_price``, ``non_positive_price``);
* volume finite and > 0 for trades, >= 0 for quotes (``non_finite_volume``,
  ``non_positive_volume``);
* timestamp parseable (ISO 8601, or epoch seconds/milliseconds), not beyond
  ``max_clock_skew_s`` in the future (``invalid_timestamp``, ``future_timestamp``);
* symbol and source formats (``invalid_symbol``, ``invalid_source``);
* an optional ``trade_id`` (the venue's id of the trade: text of 1-64 letters, digits and
  ``_.:-``, or a non-negative integer) (``invalid_trade_id``). Ticks without one have the
  empty id: the stored key is ``(symbol, ts, source, trade_id)``, so distinct trades of one
  millisecond are distinct rows and a redelivered trade is the same row;
* the jump guard (publish side only): a move beyond ``jump_guard_pct`` from the last good price
  of the symbol is quarantined (``price_jump``). Three consecutive quarantined ticks that agree
  with each other confirm a new level, so a real repricing is not blocked forever.

Validation is hand-written (no pydantic per tick): the writer runs it on every consumed message
(a batch at a time: :mod:`services.ingestion.batch`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from services.common.errors import IngestError
from services.common.schemas import Tick

SYMBOL_RE = re.compile(r"^[A-Z0-9]{1,16}(?:-[A-Z0-9]{1,16})?$")
SOURCE_RE = re.compile(r"^[a-z0-9][a-z0-9_.:-]{0,63}$")
TRADE_ID_RE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_trade_id_ok = TRADE_ID_RE.fullmatch
REQUIRED = ("symbol", "ts", "price", "volume", "source")
KNOWN_FIELDS = frozenset((*REQUIRED, "kind", "trade_id"))
JUMP_CONFIRMATIONS = 3


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a payload was refused; ``payload`` is the original (bytes or mapping)."""

    reason: str
    detail: str
    payload: Any
    symbol: str | None = None


class ValidationFailed(IngestError):
    """A tick breaks a rule: ``reason`` is its DLQ reason, ``detail`` says how."""

    def __init__(self, reason: str, detail: str, symbol: str | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.symbol = symbol


def parse_ts(value: Any) -> datetime:
    """An aware UTC datetime from ISO 8601 text, a datetime, or epoch seconds/milliseconds."""
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value)
        except ValueError as exc:
            raise ValidationFailed("invalid_timestamp", f"unparseable timestamp {value!r}") from exc
    elif isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ValidationFailed("invalid_timestamp", "non-finite epoch")
        seconds = value / 1000.0 if abs(value) >= 1e11 else float(value)
        try:
            dt = datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError) as exc:
            raise ValidationFailed("invalid_timestamp", f"epoch out of range {value!r}") from exc
    else:
        raise ValidationFailed("invalid_type", f"ts has type {type(value).__name__}")
    if dt.tzinfo is None:
        return dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


def _number(payload: Mapping[str, Any], name: str) -> float:
    value = payload[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ValidationFailed("invalid_type", f"{name} is not a number")
    return float(value)


def future_limit(max_clock_skew_s: float, now: datetime | None = None) -> datetime:
    """The newest acceptable timestamp: now plus the allowed clock skew."""
    return (now or datetime.now(UTC)) + timedelta(seconds=max_clock_skew_s)


_OK_SYMBOLS: set[str] = set()
_OK_SOURCES: set[str] = set()
_CACHE_MAX = 100_000


def _remember(symbol: str, source: str) -> None:
    if len(_OK_SYMBOLS) > _CACHE_MAX or len(_OK_SOURCES) > _CACHE_MAX:
        _OK_SYMBOLS.clear()
        _OK_SOURCES.clear()
    _OK_SYMBOLS.add(symbol)
    _OK_SOURCES.add(source)


def check_fields(
    payload: Any,
    max_clock_skew_s: float = 5.0,
    now: datetime | None = None,
    *,
    limit: datetime | None = None,
) -> Tick:
    """Stateless checks; returns the normalised tick or raises :class:`ValidationFailed`.

    Pass ``limit`` (:func:`future_limit`) when checking many ticks at once. The common case (a
    plain dict, known-good symbol and source, float price and volume, a UTC timestamp) takes a
    fast path; anything else, valid or not, gets the full check.
    """
    if limit is None:
        limit = future_limit(max_clock_skew_s, now)
    if type(payload) is dict and "kind" not in payload:
        symbol = payload.get("symbol")
        source = payload.get("source")
        price = payload.get("price")
        volume = payload.get("volume")
        if (
            type(symbol) is str
            and type(source) is str
            and type(price) is float
            and type(volume) is float
            and 0.0 < price < math.inf
            and 0.0 < volume < math.inf
            and symbol in _OK_SYMBOLS
            and source in _OK_SOURCES
        ):
            ts = payload.get("ts")
            dt: datetime | None = None
            if type(ts) is str:
                try:
                    dt = datetime.fromisoformat(ts)
                except ValueError:
                    dt = None
            elif type(ts) is datetime:
                dt = ts
            tid = payload.get("trade_id", "")
            if (
                dt is not None
                and dt.tzinfo is UTC
                and dt <= limit
                and type(tid) is str
                and (not tid or _trade_id_ok(tid))
            ):
                return Tick(symbol, dt, price, volume, source, tid)
    return _check_slow(payload, limit)


def _trade_id(payload: Mapping[str, Any], sym: str | None) -> str:
    tid = payload.get("trade_id")
    if tid is None or tid == "":
        return ""
    if type(tid) is int and tid >= 0:
        return str(tid)
    if type(tid) is str and _trade_id_ok(tid):
        return tid
    raise ValidationFailed("invalid_trade_id", f"bad trade id {str(tid)[:40]!r}", sym)


def _check_slow(payload: Any, limit: datetime) -> Tick:
    if not isinstance(payload, Mapping):
        raise ValidationFailed("unknown_shape", f"expected an object, got {type(payload).__name__}")
    if not KNOWN_FIELDS.intersection(payload):
        raise ValidationFailed("unknown_shape", "no tick field present")
    symbol = payload.get("symbol")
    sym = symbol if isinstance(symbol, str) else None
    kind = payload.get("kind", "trade")
    for name in REQUIRED:
        if name not in payload or payload[name] is None:
            if name == "volume" and kind == "quote":
                continue
            raise ValidationFailed("missing_field", f"{name} is missing", sym)
    if not isinstance(symbol, str):
        raise ValidationFailed("invalid_type", "symbol is not a string")
    if not SYMBOL_RE.match(symbol):
        raise ValidationFailed("invalid_symbol", f"bad symbol {symbol[:40]!r}", None)
    source = payload["source"]
    if not isinstance(source, str):
        raise ValidationFailed("invalid_type", "source is not a string", sym)
    if not SOURCE_RE.match(source):
        raise ValidationFailed("invalid_source", f"bad source {source[:40]!r}", sym)
    if kind not in ("trade", "quote"):
        raise ValidationFailed("invalid_type", f"unknown kind {str(kind)[:20]!r}", sym)
    try:
        price = _number(payload, "price")
        volume = 0.0 if payload.get("volume") is None else _number(payload, "volume")
        ts = parse_ts(payload["ts"])
        trade_id = _trade_id(payload, sym)
    except ValidationFailed as exc:
        exc.symbol = sym
        raise
    if not math.isfinite(price):
        raise ValidationFailed("non_finite_price", f"price is {price}", sym)
    if price <= 0:
        raise ValidationFailed("non_positive_price", f"price is {price}", sym)
    if not math.isfinite(volume):
        raise ValidationFailed("non_finite_volume", f"volume is {volume}", sym)
    if volume < 0 or (volume == 0 and kind == "trade"):
        raise ValidationFailed("non_positive_volume", f"volume is {volume} for a {kind}", sym)
    if ts > limit:
        raise ValidationFailed("future_timestamp", f"ts {ts.isoformat()} is in the future", sym)
    _remember(symbol, source)
    return Tick(symbol, ts, price, volume, source, trade_id)


def decode(raw: bytes | None) -> Any:
    if raw is None:
        raise ValidationFailed("invalid_json", "empty message")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ValidationFailed("invalid_json", str(exc)[:200]) from exc


@dataclass
class JumpGuard:
    """Quarantines moves beyond ``pct`` percent from the last good price of a symbol."""

    pct: float
    last_good: dict[str, float] = field(default_factory=dict)
    _pending: dict[str, list[float]] = field(default_factory=dict)

    def _within(self, price: float, reference: float) -> bool:
        return abs(price - reference) / reference * 100.0 <= self.pct

    def check(self, tick: Tick) -> None:
        if self.pct <= 0:
            return
        last = self.last_good.get(tick.symbol)
        if last is None or abs(tick.price - last) / last * 100.0 <= self.pct:  # _within
            self.last_good[tick.symbol] = tick.price
            if self._pending:
                self._pending.pop(tick.symbol, None)
            return
        pending = self._pending.setdefault(tick.symbol, [])
        if pending and not self._within(tick.price, pending[-1]):
            pending.clear()
        pending.append(tick.price)
        if len(pending) >= JUMP_CONFIRMATIONS:
            # The new level is confirmed by consecutive agreeing ticks: accept it.
            self.last_good[tick.symbol] = tick.price
            del self._pending[tick.symbol]
            return
        move = (tick.price - last) / last * 100.0
        raise ValidationFailed(
            "price_jump", f"{move:+.1f}% from last good {last:g} (guard {self.pct:g}%)", tick.symbol
        )


@dataclass
class Validator:
    """Publish-side validator: stateless checks plus the (stateful) jump guard."""

    max_clock_skew_s: float = 5.0
    jump_guard_pct: float = 50.0
    guard: JumpGuard = field(init=False)

    def __post_init__(self) -> None:
        self.guard = JumpGuard(self.jump_guard_pct)

    def validate(self, payload: Any, limit: datetime | None = None) -> Tick | Rejection:
        """One payload; pass ``limit`` (:func:`future_limit`) when validating a batch. A
        :class:`Rejection` (a source refused a malformed frame already) stays what it is."""
        if type(payload) is Rejection:
            return payload
        try:
            if type(payload) is dict:
                data = payload
            elif isinstance(payload, bytes | bytearray):
                data = decode(bytes(payload))
            else:
                data = payload
            tick = check_fields(data, self.max_clock_skew_s, limit=limit)
            self.guard.check(tick)
            return tick
        except ValidationFailed as exc:
            return Rejection(exc.reason, exc.detail, payload, exc.symbol)
