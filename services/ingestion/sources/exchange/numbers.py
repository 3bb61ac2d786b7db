"""Strict parsing of what venues send: decimal prices and sizes, ids, symbol pairs.

Venues send prices and sizes as decimal strings (``"27123.45000000"``). The text is checked
to be a plain decimal number (anything else, ``NaN``, ``Infinity``, exponents, underscores,
signs, hex, is refused) and turned straight into the nearest double (the ``price_ticks`` column
type): CPython's ``float()`` of decimal text is correctly rounded, which is exactly what going
through :class:`~decimal.Decimal` gives (``Decimal.__float__`` is ``float(str(d))``), without
the detour. No arithmetic ever happens on a float, so there is no drift, and the stored double
prints back as the venue's number.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime

from services.common.config import comma_items
from services.ingestion.validation import SYMBOL_RE, ValidationFailed

_DECIMAL_RE = re.compile(r"[0-9]{1,30}(?:\.[0-9]{1,30})?")
_plain = _DECIMAL_RE.fullmatch


# Prices sit on a tick grid and sizes repeat: most strings were parsed a moment ago. A bounded
# memo of exact parses (text -> double) saves the check and the parse for them.
PARSED: dict[str, float] = {}
PARSED_MAX = 65_536


def decimal_value(value: object, field: str) -> float:
    """A venue's decimal (string, or a JSON number where the venue sends numbers) as the
    double nearest to its exact value; ``ValidationFailed`` (``invalid_type``) otherwise."""
    if type(value) is str:
        known = PARSED.get(value)
        if known is not None:
            return known
        if not _plain(value):
            return _bad(value, field)
        parsed = float(value)  # correctly rounded: the double nearest the exact decimal
        if len(PARSED) >= PARSED_MAX:
            PARSED.clear()
        PARSED[value] = parsed
        return parsed
    if type(value) is int:
        text = str(value)
    elif type(value) is float:
        # A JSON number (Kraken v2, Finnhub): the JSON parser already rounded the venue's
        # digits once, correctly, to the nearest double; nothing more is done to it.
        return value if math.isfinite(value) and value >= 0 else _bad(value, field)
    else:
        return _bad(value, field)
    if not _plain(text):
        return _bad(value, field)
    return float(text)


def _bad(value: object, field: str) -> float:
    raise ValidationFailed("invalid_type", f"{field} is not a decimal number: {str(value)[:40]!r}")


def epoch_ms(value: object, field: str = "time") -> datetime:
    """Epoch milliseconds (an integer) as an aware UTC datetime."""
    if type(value) is not int or value < 0:
        raise ValidationFailed("invalid_timestamp", f"{field} is not epoch milliseconds")
    return datetime.fromtimestamp(value / 1000.0, UTC)


def rfc3339(value: object, field: str = "time") -> datetime:
    """RFC 3339 text (``2024-01-01T00:00:00.123456789Z``; digits beyond microseconds are
    cut, not rounded) as an aware UTC datetime."""
    if type(value) is not str:
        raise ValidationFailed("invalid_timestamp", f"{field} is not RFC 3339 text")
    text = value
    dot = text.find(".")
    if dot > 0:
        end = dot + 1
        while end < len(text) and text[end].isdigit():
            end += 1
        text = text[: dot + 1] + text[dot + 1 : min(end, dot + 7)] + text[end:]
    try:
        dt = datetime.fromisoformat(text.replace(" ", "T", 1))
    except ValueError as exc:
        raise ValidationFailed("invalid_timestamp", f"{field} {value[:40]!r}") from exc
    if dt.tzinfo is None:
        raise ValidationFailed("invalid_timestamp", f"{field} {value[:40]!r} has no offset")
    return dt.astimezone(UTC)


def sequential_id(value: object, field: str = "trade id") -> int:
    """A venue's sequential trade id (an integer, or its decimal text)."""
    if type(value) is int and value >= 0:
        return value
    if type(value) is str and value.isascii() and value.isdigit() and len(value) <= 30:
        return int(value)
    raise ValidationFailed("invalid_trade_id", f"{field} {str(value)[:40]!r} is not sequential")


def parse_pairs(spec: str, kind: str) -> dict[str, str]:
    """``venue-symbol:PRICECAST-SYMBOL`` pairs (comma list) -> {venue symbol: symbol}.

    The venue symbol is kept as written (Kraken's ``BTC/USD``, Coinbase's ``BTC-USD``); the
    Pricecast symbol must be one the validation accepts."""
    out: dict[str, str] = {}
    for item in comma_items(spec):
        venue, sep, symbol = item.rpartition(":")
        venue, symbol = venue.strip(), symbol.strip()
        if not sep or not venue or not SYMBOL_RE.match(symbol):
            raise ValueError(
                f"PRICECAST_{kind.upper()}_SYMBOLS: {item!r} is not venue-symbol:SYMBOL"
                " (e.g. btcusdt:BTC-USD)"
            )
        out[venue] = symbol
    if not out:
        raise ValueError(f"PRICECAST_{kind.upper()}_SYMBOLS names no pair")
    return out
