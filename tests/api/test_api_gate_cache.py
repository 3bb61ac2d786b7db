"""The gate's in-process copy of prediction reads, against the real Redis: concurrent reads
of a key share one MGET, and the copy is refreshed behind steady traffic without ever being
served past its bound."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import redis
import redis.asyncio as aioredis

from services.api.core.gate import RedisGate
from services.common.cache import prediction_key, status_key

KEY, STATUS = prediction_key("GATE-USD", "1d", 1), status_key("GATE-USD", "1d")


class CountingRedis(aioredis.Redis):
    """The real client, counting its MGETs."""

    mgets = 0

    @classmethod
    def connect(cls, url: str) -> CountingRedis:
        client = cls.from_url(url)
        assert isinstance(client, CountingRedis)
        return client

    async def mget(self, *args: Any, **kwargs: Any) -> Any:
        self.mgets += 1
        return await super().mget(*args, **kwargs)


@asynccontextmanager
async def counting_gate(
    url: str, local_cache_s: float
) -> AsyncIterator[tuple[RedisGate, CountingRedis]]:
    """A gate on a :class:`CountingRedis` client, both closed after."""
    client = CountingRedis.connect(url)
    gate = RedisGate(client, retry_s=1.0, local_cache_s=local_cache_s)
    try:
        yield gate, client
    finally:
        await gate.close()
        await client.aclose()  # type: ignore[attr-defined]


async def test_concurrent_reads_share_one_round_trip(
    redis_url: str, redis_client: redis.Redis
) -> None:
    redis_client.set(KEY, b'{"v": 1}')
    async with counting_gate(redis_url, 0.5) as (gate, client):
        reads = await asyncio.gather(*(gate.read(KEY, STATUS) for _ in range(50)))
        assert {r.cached for r in reads} == {b'{"v": 1}'}
        assert all(r.redis_ok and r.status is None for r in reads)
        assert client.mgets == 1


async def test_copy_is_refreshed_behind_traffic_within_its_bound(
    redis_url: str, redis_client: redis.Redis
) -> None:
    bound_s = 0.4
    redis_client.set(KEY, b'{"v": 1}')
    async with counting_gate(redis_url, bound_s) as (gate, client):
        first = time.monotonic()
        assert (await gate.read(KEY, STATUS)).cached == b'{"v": 1}'
        redis_client.set(KEY, b'{"v": 2}')
        await asyncio.sleep(bound_s * 0.6)  # second half of the bound
        stale = await gate.read(KEY, STATUS)  # answered from the copy, refresh started
        assert time.monotonic() - first < bound_s
        assert stale.cached == b'{"v": 1}'
        for _ in range(100):  # the refresh lands without any request waiting for it
            if gate._inflight.get(KEY) is None:
                break
            await asyncio.sleep(0.01)
        assert client.mgets == 2
        assert (await gate.read(KEY, STATUS)).cached == b'{"v": 2}'
        assert client.mgets == 2  # that answer came from the refreshed copy


async def test_without_a_copy_every_read_goes_to_redis(
    redis_url: str, redis_client: redis.Redis
) -> None:
    async with counting_gate(redis_url, 0) as (gate, client):
        redis_client.set(KEY, b'{"v": 1}')
        assert (await gate.read(KEY, STATUS)).cached == b'{"v": 1}'
        redis_client.set(KEY, b'{"v": 2}')
        assert (await gate.read(KEY, STATUS)).cached == b'{"v": 2}'
        assert client.mgets == 2
