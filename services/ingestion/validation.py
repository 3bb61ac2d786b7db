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

Validation is hand-written (no pydantic per tick): the writer runs it on every consumed message.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import orjson

SYMBOL_RE = re.compile(r"^[A-Z0-9]{1,16}(?:-[A-Z0-9]{1,16})?$")
SOURCE_RE = re.compile(r"^[a-z0-9][a-z0-9_.:-]{0,63}$")
TRADE_ID_RE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_trade_id_ok = TRADE_ID_RE.fullmatch
# The wire form of ``ts`` (``services.common.kafka.dumps``: orjson, UTC, "Z"),
# "YYYY-MM-DDTHH:MM:SSZ" or "YYYY-MM-DDTHH:MM:SS.ffffffZ": the writer passes a timestamp of
# this form through to COPY as it came (see :func:`is_wire_ts`).
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


class Tick(NamedTuple):
    """A validated tick (the ``prices`` wire format of ``services.common.schemas.Tick``).

    A plain tuple rather than the pydantic model: the writer builds one per consumed message.
    """

    symbol: str
    ts: datetime  # aware, UTC
    price: float
    volume: float
    source: str
    trade_id: str = ""  # the venue's trade id ("": none)

    def wire(self) -> dict[str, Any]:
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


class ValidationFailed(Exception):
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


def is_wire_ts(ts: str) -> bool:
    """``ts`` has the wire form's separators where they belong (positions 4, 7, 10, 13, 16,
    19 and the final "Z"). If ``datetime.fromisoformat`` also accepts it, the rest are ASCII
    digits and PostgreSQL reads the same instant from the text."""
    n = len(ts)
    seps = ts[4:20:3]
    return (n == 20 and seps == "--T::Z") or (n == 27 and seps == "--T::." and ts[26] == "Z")


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
    for i, raw in enumerate(values):
        if type(raw) is bytes:
            try:
                d = loads(raw)
            except orjson.JSONDecodeError:
                d = None
            n_fields = len(d) if type(d) is dict else 0
            tid = d.get("trade_id", "") if n_fields == 6 else ""
            if n_fields == 5 or (n_fields == 6 and type(tid) is str and _trade_id_ok(tid)):
                symbol = d.get("symbol")
                ts = d.get("ts")
                price = d.get("price")
                volume = d.get("volume")
                source = d.get("source")
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
                        ((n := len(ts)) == 20 and ts[4:20:3] == "--T::Z")
                        or (n == 27 and ts[4:20:3] == "--T::." and ts[26] == "Z")
                    )
                ):
                    dt: datetime | None
                    try:
                        dt = fromiso(ts)  # aware UTC ("Z"); may still be no real date
                    except ValueError:
                        dt = None  # the full check says why
                    if dt is not None and dt <= limit:
                        rows.append(f"{symbol}\t{ts}\t{price!r}\t{volume!r}\t{source}\t{tid}\n")
                        good.append(i)
                        last = newest.get(symbol)
                        if last is None or dt > last:
                            newest[symbol] = dt
                        continue
        try:
            tick = check_fields(decode(raw), limit=limit)
        except ValidationFailed as exc:
            out.rejects.append((i, Rejection(exc.reason, exc.detail, raw, exc.symbol)))
            continue
        rows.append(copy_line(tick))
        good.append(i)
        last = newest.get(tick.symbol)
        if last is None or tick.ts > last:
            newest[tick.symbol] = tick.ts
    return out


@dataclass
class JumpGuard:
    """Quarantines moves beyond ``pct`` percent from the last good price of a symbol."""

    pct: float
    last_good: dict[str, float] = field(default_factory=dict)
    _pending: dict[str, list[float]] = field(default_factory=dict)

    def _within(self, a: float, b: float) -> bool:
        return abs(a - b) / b * 100.0 <= self.pct

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
