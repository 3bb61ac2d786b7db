"""Shutdown never hangs: a task that loses its cancellation is cancelled again or abandoned,
and the gate's sync task stops even when redis-py swallows the cancel (Python 3.11
``wait_for``; a single ``cancel()`` + ``await task`` hung ``make test``)."""

from __future__ import annotations

import asyncio
import random

import pytest
import redis.asyncio as aioredis

from services.api.core.bounded import bounded, stop_task
from services.api.core.gate import RedisGate
from services.common.config import Settings


async def test_stop_task_recancels_a_task_that_swallowed_one_cancel() -> None:
    swallowed = 0

    async def forgets_once() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                swallowed += 1
                if swallowed > 1:
                    raise

    task = asyncio.create_task(forgets_once())
    await asyncio.sleep(0)
    assert await stop_task(task, 5.0, "forgets once") is True
    assert task.cancelled() and swallowed == 2


async def test_stop_task_abandons_a_task_that_never_stops(caplog: pytest.LogCaptureFixture) -> None:
    stop = asyncio.Event()

    async def stubborn() -> None:
        while not stop.is_set():
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                continue

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    assert await stop_task(task, 0.2, "stubborn") is False
    assert not task.done()
    assert any("stubborn did not stop" in r.getMessage() for r in caplog.records)
    stop.set()
    task.cancel()
    await asyncio.wait({task})


async def test_bounded_raises_timeout_and_stops_the_work() -> None:
    started = asyncio.Event()

    async def slow() -> int:
        started.set()
        await asyncio.sleep(10)
        return 1

    with pytest.raises(TimeoutError):
        await bounded(slow(), 0.1, "slow")
    assert started.is_set()
    assert await bounded(asyncio.sleep(0, result=7), 1.0, "quick") == 7


async def test_gate_close_always_ends_the_sync_task(settings: Settings) -> None:
    """Close while a pipeline is in flight, many times: each close ends the task."""
    rng = random.Random(7)
    for _ in range(60):
        client = aioredis.Redis.from_url(settings.redis_url, socket_timeout=1.0)
        gate = RedisGate(client, 0.5, sync_interval_s=0.0)
        await gate.admit("subject", "jti", 1_000)  # starts the sync task
        task = gate._task
        assert task is not None
        await asyncio.sleep(rng.uniform(0.0005, 0.01))
        await gate.close()
        assert task.done() and gate._task is None
        await client.aclose()
