"""The interface every price source implements.

A source is polled: :meth:`Source.fetch` returns the raw tick payloads (mappings with
``symbol``, ``ts``, ``price``, ``volume``, ``source`` and optionally ``kind``) that are new since
the last call. It does not validate: the publisher does, for every source alike. A source that
has nothing more to give (a CSV file replayed to the end) sets ``exhausted``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

RawTick = dict[str, Any]


class Source(ABC):
    name: str = "source"
    interval_s: float = 1.0
    exhausted: bool = False

    @abstractmethod
    async def fetch(self) -> list[RawTick]:
        """The next raw ticks (possibly none)."""

    def published(self, ticks: list[RawTick]) -> None:  # noqa: B027 - optional hook
        """Called once the ticks of the last :meth:`fetch` are handled: published (acknowledged
        by the broker) or dead-lettered. A source that re-reads upstream state uses it to offer
        each tick once."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
