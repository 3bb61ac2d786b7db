"""The live-stream wire contract: channels, client messages, server envelopes, close codes.

Channels: ``predictions:{SYMBOL}:{1h|1d}`` (scope ``predictions:read``), ``bars:{SYMBOL}:
{1m|1h|1d}`` and ``ticks:{SYMBOL}`` (scope ``prices:read``). Server messages are one JSON
object ``{"type", "channel", "seq", "data"}``; connection-level ones (``status``, ``error``,
``ping``) carry ``"channel": null``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, Final, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from services.api.params import SYMBOL_PATTERN
from services.common.errors import StreamError

# Close codes (design: "Live streams").
CLOSE_AUTH: Final = 4401  # token missing, invalid, expired or revoked
CLOSE_SCOPE: Final = 4403  # the token lacks a channel's scope
CLOSE_SLOW: Final = 4408  # the client does not keep up
CLOSE_LIMIT: Final = 4429  # too many connections (or connection attempts)
CLOSE_GOING_AWAY: Final = 1001  # the server shuts down
CLOSE_TOO_BIG: Final = 1009  # a client message over the size limit

KINDS: Final[dict[str, tuple[str, ...]]] = {
    "predictions": ("1h", "1d"),
    "bars": ("1m", "1h", "1d"),
    "ticks": (),
}
SCOPE: Final[dict[str, str]] = {
    "predictions": "predictions:read",
    "bars": "prices:read",
    "ticks": "prices:read",
}
_SYMBOL = re.compile(SYMBOL_PATTERN)


class BadChannel(StreamError, ValueError):
    """A channel name outside the contract; the message is for the client."""


@dataclass(frozen=True, slots=True)
class Channel:
    kind: str  # predictions | bars | ticks
    symbol: str
    interval: str | None = None

    @property
    def name(self) -> str:
        if self.interval is None:
            return f"{self.kind}:{self.symbol}"
        return f"{self.kind}:{self.symbol}:{self.interval}"

    @property
    def scope(self) -> str:
        return SCOPE[self.kind]


def parse_channel(raw: str) -> Channel:
    """``predictions:btc-usd:1h`` -> Channel("predictions", "BTC-USD", "1h")."""
    parts = raw.strip().split(":")
    kind = parts[0].lower()
    if kind not in KINDS:
        raise BadChannel(f"unknown channel kind {kind!r}; expected one of {sorted(KINDS)}")
    intervals = KINDS[kind]
    expected = 3 if intervals else 2
    if len(parts) != expected:
        shape = f"{kind}:SYMBOL:{'|'.join(intervals)}" if intervals else f"{kind}:SYMBOL"
        raise BadChannel(f"channel {raw!r} must look like {shape}")
    symbol = parts[1]
    if not _SYMBOL.match(symbol):
        raise BadChannel(f"invalid symbol {symbol!r}")
    interval = parts[2] if intervals else None
    if interval is not None and interval not in intervals:
        raise BadChannel(f"interval {interval!r} not one of {intervals} for {kind}")
    return Channel(kind, symbol.upper(), interval)


# --- client -> server (WebSocket) ---------------------------------------------------------


class AuthMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["auth"]
    token: str = Field(min_length=1, max_length=8192)


class SubscribeMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["subscribe", "unsubscribe"]
    channels: list[Annotated[str, Field(max_length=80)]] = Field(min_length=1, max_length=100)


ClientMessage = Annotated[AuthMessage | SubscribeMessage, Field(discriminator="type")]
CLIENT_MESSAGE: Final[TypeAdapter[AuthMessage | SubscribeMessage]] = TypeAdapter(ClientMessage)


# --- server -> client ------------------------------------------------------------------------


def envelope(kind: str, channel: str | None, seq: int, data_json: str) -> str:
    """The JSON text of one server message; ``data_json`` is already JSON (the record's
    bytes as they came from Kafka, decoded once for every subscriber)."""
    # Channel names are validated (symbol pattern, fixed kinds): safe to put in as they are.
    ch = "null" if channel is None else f'"{channel}"'
    return f'{{"type":"{kind}","channel":{ch},"seq":{seq},"data":{data_json}}}'


def dumps(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_NAIVE_UTC | orjson.OPT_UTC_Z).decode()
