"""The dead-letter record on ``prices.dlq``: reason, original payload, where it came from.

``payload`` is always the original as text: the message bytes as received (decoded as UTF-8
with replacement) or, for a payload a source built in memory, its JSON text (NaN and infinities
kept as written, which strict JSON would lose).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

Stage = Literal["publish", "writer"]


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a consumed message came from."""

    topic: str
    partition: int
    offset: int


def payload_text(payload: Any) -> str:
    if isinstance(payload, bytes | bytearray):
        return bytes(payload).decode("utf-8", errors="replace")
    if isinstance(payload, str):
        return payload
    try:
        return json.dumps(payload, default=str, allow_nan=True)
    except (TypeError, ValueError):
        return repr(payload)


def dlq_record(
    reason: str,
    detail: str,
    payload: Any,
    stage: Stage,
    origin: Origin | None = None,
    source: str | None = None,
) -> dict[str, Any]:
    return {
        "reason": reason,
        "detail": detail,
        "stage": stage,
        "source": source,
        "payload": payload_text(payload),
        "origin": (
            {"topic": origin.topic, "partition": origin.partition, "offset": origin.offset}
            if origin
            else None
        ),
        "rejected_at": datetime.now(UTC),
    }
