"""What the exchange stream modules share: settings of a stream, a parsed frame, counters,
and the helpers venue parsers use to build raw ticks and rejections."""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import orjson

from services.ingestion.sources.base import RawTick
from services.ingestion.validation import Rejection, ValidationFailed

SECRET_PARAMS = frozenset(("token", "apikey", "api_key", "key"))


@dataclass(frozen=True)
class StreamConfig:
    ws_url: str
    rest_url: str
    silence_s: float = 30.0
    max_age_s: float = 0.0  # 0: no limit of our own
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    open_timeout_s: float = 10.0
    ping_interval_s: float = 20.0
    rest_timeout_s: float = 10.0
    repair: bool = True
    repair_attempts: int = 3
    repair_max_trades: int = 100_000
    batch_max: int = 10_000
    buffer_max: int = 100_000
    api_key: str | None = None


class Parsed:
    """One frame, parsed: trades (raw ticks), rejections, and a venue error if it said so.
    (A plain class: one is made per frame.)"""

    __slots__ = ("error", "rejects", "trades")

    def __init__(
        self,
        trades: list[RawTick] | None = None,
        rejects: list[Rejection] | None = None,
        error: str | None = None,
    ) -> None:
        self.trades: list[RawTick] = [] if trades is None else trades
        self.rejects: list[Rejection] = [] if rejects is None else rejects
        self.error = error


@dataclass(slots=True)
class StreamStats:
    """One streaming source's counters since it started (``/health`` reads them). Slots: it is
    updated on every message, and a misspelt counter fails instead of adding an attribute."""

    connections: int = 0
    messages: int = 0
    trades: int = 0
    malformed: int = 0
    reconnects: dict[str, int] = field(default_factory=dict)
    gaps: dict[str, int] = field(
        default_factory=lambda: {"found": 0, "repaired": 0, "failed": 0, "trades_repaired": 0}
    )
    connected_since: datetime | None = None
    last_error: str | None = None


GC_YOUNG_THRESHOLD = 50_000


def tune_gc() -> None:
    """Raise the cyclic GC's young-generation threshold (never lower it) in a process that
    runs a stream. Every trade allocates about ten short-lived, acyclic objects (frame text,
    dicts, datetimes, the record bytes); with the default threshold (700) a collection runs
    every few dozen trades and costs some 15% of the CPU per trade. A collection scans the
    young objects still alive: a publish batch (its ticks) stays below the threshold, so it is
    mostly freed before one runs. Reference counting still frees all of them at once; only
    cycles wait a little longer."""
    young, *older = gc.get_threshold()
    if young < GC_YOUNG_THRESHOLD:
        gc.set_threshold(GC_YOUNG_THRESHOLD, *older)


def redact(url: str) -> str:
    """``url`` with secret query values (a Finnhub token) replaced: safe to log and show."""
    parts = urlsplit(url)
    if not parts.query:
        return url
    query = [
        (key, "***" if key.lower() in SECRET_PARAMS else value)
        for key, value in parse_qsl(parts.query)
    ]
    return urlunsplit(parts._replace(query=urlencode(query, safe="*/@,")))


def trade(
    source: str, symbol: str, venue_symbol: str, ts: datetime, price: float, size: float, tid: str
) -> RawTick:
    """A raw tick for one trade; ``_venue`` is internal (gap tracking) and removed before the
    tick leaves the source."""
    return {
        "symbol": symbol,
        "ts": ts,
        "price": price,
        "volume": size,
        "source": source,
        "trade_id": tid,
        "_venue": venue_symbol,
    }


def plain(ticks: list[RawTick]) -> list[RawTick]:
    """``ticks`` without the internal ``_venue`` key (trades that skip gap tracking)."""
    for tick in ticks:
        tick.pop("_venue", None)
    return ticks


def load_frame(frame: str | bytes) -> Any:
    """A frame's JSON; ``ValidationFailed`` (``invalid_json``) if it is none."""
    try:
        return orjson.loads(frame)
    except orjson.JSONDecodeError as exc:
        raise ValidationFailed("invalid_json", str(exc)[:200]) from exc


def rejected(exc: Exception, payload: Any, symbol: str | None = None) -> Rejection:
    """Why a frame (or one trade of it) is malformed, for the DLQ."""
    if isinstance(exc, ValidationFailed):
        return Rejection(exc.reason, exc.detail, payload, symbol or exc.symbol)
    if isinstance(exc, KeyError):
        return Rejection("missing_field", f"{exc.args[0]!r} is missing", payload, symbol)
    return Rejection("unknown_shape", f"{type(exc).__name__}: {exc}"[:200], payload, symbol)


FRAME_ERRORS = (ValidationFailed, KeyError, TypeError, AttributeError, IndexError, ValueError)


def parse_each(items: Iterable[Any], convert: Callable[[Any], RawTick]) -> Parsed:
    """Each of a frame's trades through ``convert``; a bad trade is rejected with its reason
    and the others go on (an error in the frame's own shape still fails the whole frame)."""
    out = Parsed()
    for item in items:
        try:
            out.trades.append(convert(item))
        except FRAME_ERRORS as exc:
            out.rejects.append(rejected(exc, item))
    return out
