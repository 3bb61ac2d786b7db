"""Per-request admission without a Redis round trip on the hot path.

* Rate limit per subject, fixed one-minute windows, shared through Redis: each process counts
  locally and a background task flushes the counts every ``api_sync_interval_ms``
  (``INCRBY``), learning the global totals back. A request is refused when the last known
  global count plus the local unflushed count exceeds the limit; so across replicas the limit
  can be overshot by at most one sync interval of traffic.
* Deny-list of revoked access tokens (``jti``): a Redis sorted set scored by expiry plus a
  version counter; the sync task reloads the set when the version moves, so a revocation
  reaches every replica within one sync interval (and the revoking one at once).
* Prediction cache reads: Redis ``MGET`` of the forecast and the symbol's status, kept in
  process for ``api_local_cache_ms`` (the staleness bound; 0 turns it off), refreshed in the
  background during the second half of that bound; concurrent reads share one ``MGET``.

When Redis fails the gate keeps serving on local state (local counts, the last deny-list) and
retries Redis after ``api_redis_retry_s``, so nothing needs a restart when Redis returns.
Every Redis round trip is bounded by ``REDIS_BUDGET_S`` (redis-py's own retries included), and
``close`` by ``CLOSE_TIMEOUT_S`` even when redis-py loses the cancellation (see ``bounded``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from services.api.core.bounded import stop_task
from services.common.errors import ApiError
from services.common.metrics import RATE_LIMITED

log = logging.getLogger(__name__)

WINDOW_S = 60
DENIED_SET = "denied-jti"
DENIED_VERSION = "denied-jti:version"
_L1_MAX = 10_000
_COUNT = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return n
"""
RedisFailure = (RedisError, OSError, TimeoutError)
REDIS_BUDGET_S = 2.0
CLOSE_TIMEOUT_S = 3.0


@dataclass(frozen=True, slots=True)
class Admission:
    cached: bytes | None = None
    status: bytes | None = None
    redis_ok: bool = True


class RedisGate:
    def __init__(
        self,
        client: aioredis.Redis,
        retry_s: float,
        local_cache_s: float = 0.25,
        sync_interval_s: float = 0.1,
    ) -> None:
        self.client = client
        self.retry_s = retry_s
        self.local_cache_s = local_cache_s
        self.sync_interval_s = sync_interval_s
        self._down_until = 0.0
        self._count = client.register_script(_COUNT)
        self._window = 0
        self._pending: dict[str, int] = {}
        self._global: dict[str, int] = {}
        self._local_counts: dict[str, int] = {}
        self._local_window = 0
        self._denied: dict[str, float] = {}  # jti -> exp
        self._deny_version: bytes | None = None
        self._l1: dict[str, tuple[float, bytes | None, bytes | None]] = {}
        self._inflight: dict[str, asyncio.Future[Admission]] = {}
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    # --- Redis availability ------------------------------------------------------------
    @property
    def redis_usable(self) -> bool:
        return time.monotonic() >= self._down_until

    def mark_down(self, exc: BaseException) -> None:
        if self.redis_usable:
            log.warning(
                "redis unavailable (%s); using in-process fallbacks for %.1fs",
                type(exc).__name__,
                self.retry_s,
            )
        self._down_until = time.monotonic() + self.retry_s

    # --- admission (hot path) --------------------------------------------------------------
    async def admit(
        self,
        subject: str,
        jti: str,
        limit: int,
    ) -> None:
        """Refuse a revoked token (ERR_AUTH_001) or an exhausted subject (ERR_RATE_001)."""
        if self._task is None:
            await self._start()
        if jti in self._denied:
            raise ApiError("ERR_AUTH_001", "Token has been revoked")
        window = int(time.time()) // WINDOW_S
        if window != self._window:
            self._window = window
            self._pending = {}
            self._global = {}
        pending = self._pending.get(subject, 0) + 1
        self._pending[subject] = pending
        if pending + self._global.get(subject, 0) > limit:
            _refuse_rate(window)

    def is_denied(self, jti: str) -> bool:
        """``jti`` is on the deny-list as last synced (live streams re-check it)."""
        return jti in self._denied

    async def read(self, key: str, status_key: str) -> Admission:
        """The cached forecast and status: the in-process copy while it is younger than
        ``local_cache_s`` (refreshed in the background during its second half, so steady
        traffic never waits on Redis), else one Redis MGET shared by every request for the
        key that arrives while it is in flight."""
        if self.local_cache_s <= 0:
            return await self._fetch(key, status_key)
        now = time.monotonic()
        hit = self._l1.get(key)
        if hit is not None and hit[0] > now:
            if hit[0] - now < self.local_cache_s / 2 and key not in self._inflight:
                self._inflight[key] = asyncio.ensure_future(self._fetch(key, status_key))
            return Admission(hit[1], hit[2], True)
        pending = self._inflight.get(key)
        if pending is None:
            pending = self._inflight[key] = asyncio.ensure_future(self._fetch(key, status_key))
        return await asyncio.shield(pending)

    async def _fetch(self, key: str, status_key: str) -> Admission:
        started = time.monotonic()
        try:
            if not self.redis_usable:
                return Admission(redis_ok=False)
            try:
                async with asyncio.timeout(REDIS_BUDGET_S):
                    cached, status = await self.client.mget(key, status_key)
            except RedisFailure as exc:
                self.mark_down(exc)
                return Admission(redis_ok=False)
            if self.local_cache_s > 0:
                if len(self._l1) >= _L1_MAX:
                    self._l1.clear()
                # Counted from before the read: the copy is never older than the bound.
                self._l1[key] = (started + self.local_cache_s, cached, status)
            return Admission(cached, status, True)
        finally:
            self._inflight.pop(key, None)

    # --- synchronisation with Redis ------------------------------------------------------------
    async def _start(self) -> None:
        if self._closing:
            return
        self._task = asyncio.create_task(self._sync_loop(), name="api-gate-sync")
        await self.sync()  # the deny-list is loaded before the first request is admitted

    async def _sync_loop(self) -> None:
        # The flag, not only the cancel, ends the loop: redis-py can swallow a cancel.
        while not self._closing:
            await asyncio.sleep(self.sync_interval_s)
            if self._closing:
                break
            try:
                await self.sync()
            except Exception:  # never let the loop die
                log.exception("gate sync failed")

    async def sync(self) -> None:
        """Flush local counts, learn global totals, reload the deny-list if it changed."""
        if not self.redis_usable:
            return
        window, pending = self._window, self._pending
        self._pending = {}
        subjects = list(pending)
        try:
            pipe = self.client.pipeline(transaction=False)
            for subject in subjects:
                key = f"rl:{subject}:{window}"
                pipe.incrby(key, pending[subject])
                pipe.expire(key, WINDOW_S + 1)
            pipe.get(DENIED_VERSION)
            async with asyncio.timeout(REDIS_BUDGET_S):
                replies = await pipe.execute()
            version = replies[-1]
            if version != self._deny_version:
                async with asyncio.timeout(REDIS_BUDGET_S):
                    entries = await self.client.zrangebyscore(
                        DENIED_SET, time.time(), "+inf", withscores=True
                    )
                now = time.time()
                local = {
                    jti: expires_at for jti, expires_at in self._denied.items() if expires_at > now
                }
                self._denied = local | {member.decode(): float(score) for member, score in entries}
                self._deny_version = version
        except RedisFailure as exc:
            self.mark_down(exc)
            if window == self._window:  # keep counting locally
                for subject, counted in pending.items():
                    self._pending[subject] = self._pending.get(subject, 0) + counted
            return
        if window == self._window:
            for i, subject in enumerate(subjects):
                self._global[subject] = int(replies[2 * i])

    async def close(self) -> None:
        """Stop the sync task; never waits more than ``CLOSE_TIMEOUT_S``."""
        self._closing = True
        task, self._task = self._task, None
        for pending in list(self._inflight.values()):
            pending.cancel()
        if task is not None:
            await stop_task(task, CLOSE_TIMEOUT_S, "api gate sync")

    # --- token endpoint limit (not the hot path: a direct Redis count) -------------------------
    async def count(self, key: str, limit: int) -> None:
        window = int(time.time()) // WINDOW_S
        if self.redis_usable:
            try:
                async with asyncio.timeout(REDIS_BUDGET_S):
                    used = await self._count(keys=[f"rl:{key}:{window}"], args=[WINDOW_S + 1])
            except RedisFailure as exc:
                self.mark_down(exc)
            else:
                if int(used) > limit:
                    _refuse_rate(window)
                return
        if window != self._local_window:
            self._local_counts.clear()
            self._local_window = window
        used = self._local_counts.get(key, 0) + 1
        self._local_counts[key] = used
        if used > limit:
            _refuse_rate(window)

    # --- deny-list -----------------------------------------------------------------------
    async def deny(self, jti: str, expires_at: float) -> bool:
        """Deny-list ``jti`` until it expires; False when Redis could not record it."""
        now = time.time()
        self._denied = {
            denied_jti: expiry for denied_jti, expiry in self._denied.items() if expiry > now
        }
        self._denied[jti] = expires_at
        try:
            pipe = self.client.pipeline(transaction=True)
            pipe.zadd(DENIED_SET, {jti: expires_at})
            pipe.zremrangebyscore(DENIED_SET, "-inf", now)
            pipe.incr(DENIED_VERSION)
            async with asyncio.timeout(REDIS_BUDGET_S):
                await pipe.execute()
        except RedisFailure as exc:
            self.mark_down(exc)
            return False
        return True

    # --- cache writes ----------------------------------------------------------------------
    async def cache_if_absent(self, key: str, value: bytes, ttl_s: int) -> None:
        if not self.redis_usable:
            return
        try:
            async with asyncio.timeout(REDIS_BUDGET_S):
                await self.client.set(key, value, ex=ttl_s, nx=True)
        except RedisFailure as exc:
            self.mark_down(exc)


def _refuse_rate(window: int) -> None:
    RATE_LIMITED.inc()
    retry_after = max(1, (window + 1) * WINDOW_S - int(time.time()))
    raise ApiError(
        "ERR_RATE_001",
        details={"retry_after_s": retry_after},
        headers={"Retry-After": str(retry_after)},
    )
