"""A bounded hand-over of received trades from a stream's reader to the publisher.

The reader appends what each frame gave; the publisher takes everything there is (up to a
batch) in one call, so batches grow with the rate. When the publisher falls behind and the
buffer holds ``max_items``, the reader waits, stops reading the socket, and TCP pushes back on
the venue: memory stays bounded and nothing is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any


class TradeBuffer:
    def __init__(self, max_items: int) -> None:
        self.max_items = max_items
        self._items: list[Any] = []
        self._ready = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()

    def __len__(self) -> int:
        return len(self._items)

    @property
    def full(self) -> bool:
        return len(self._items) >= self.max_items

    def add(self, items: list[Any]) -> None:
        """Append now (the reader checks :attr:`full` after each frame and waits then)."""
        self._items.extend(items)
        self._ready.set()

    async def room(self) -> None:
        """Until the buffer is below ``max_items``."""
        while len(self._items) >= self.max_items:
            self._room.clear()
            await self._room.wait()

    async def put(self, items: list[Any]) -> None:
        await self.room()
        self.add(items)

    async def take(self, max_items: int, timeout_s: float) -> list[Any]:
        """Up to ``max_items``, waiting at most ``timeout_s`` for the first."""
        if not self._items:
            self._ready.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ready.wait(), timeout_s)
            if not self._items:
                return []
        if len(self._items) <= max_items:
            out, self._items = self._items, []
        else:
            out = self._items[:max_items]
            del self._items[:max_items]
        self._room.set()
        return out
