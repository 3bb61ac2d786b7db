"""Redis failure modes on a private server: stopped, low hit rate, evictions."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import redis

from services.common import infra
from services.common.config import Settings

Diagnose = Callable[..., dict[str, Any]]


def _at(settings: Settings, port: int) -> Settings:
    return settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{port}/0"})


def test_stopped_redis_is_unreachable(
    settings: Settings, private_redis: infra.RedisServer, diagnose_map: Diagnose
) -> None:
    port = private_redis.port
    private_redis.stop()
    found = diagnose_map(_at(settings, port), "redis")
    reach = found["redis.reachable"]
    assert reach.status == "fail"
    assert "refused" in reach.evidence.lower() and str(port) in reach.evidence
    assert "start Redis" in reach.fix and "REDIS_URL" in reach.fix
    assert found["redis.hit_rate"].status == "skip"
    assert found["redis.evictions"].status == "skip"


def test_low_hit_rate_warns(
    settings: Settings, private_redis: infra.RedisServer, diagnose_map: Diagnose
) -> None:
    port = private_redis.port
    client = redis.Redis(port=port)
    client.set("prediction:BTC-USD:1d:1", b"{}", ex=60)
    for _ in range(30):
        client.get("prediction:BTC-USD:1d:1")
    for i in range(170):
        client.get(f"prediction:NOPE-{i}:1d:1")
    hit = diagnose_map(_at(settings, port), "redis.hit_rate")["redis.hit_rate"]
    assert hit.status == "warn"
    assert "hit rate 15.0%" in hit.evidence and "30 hits, 170 misses" in hit.evidence
    assert "prediction:*" in hit.fix
    client.config_resetstat()
    for _ in range(150):
        client.get("prediction:BTC-USD:1d:1")
    assert diagnose_map(_at(settings, port), "redis.hit_rate")["redis.hit_rate"].status == "ok"


def test_evictions_warn_and_noeviction_full_fails(
    settings: Settings, private_redis: infra.RedisServer, diagnose_map: Diagnose
) -> None:
    port = private_redis.port
    client = redis.Redis(port=port)
    assert diagnose_map(_at(settings, port), "redis.evictions")["redis.evictions"].status == "ok"
    client.config_set("maxmemory", str(4 * 1024 * 1024))
    client.config_set("maxmemory-policy", "allkeys-lru")
    payload = b"x" * 4096
    pipe = client.pipeline(transaction=False)
    for i in range(3000):
        pipe.set(f"prediction:S{i}:1h:1", payload, ex=600)
    pipe.execute()
    ev = diagnose_map(_at(settings, port), "redis.evictions")["redis.evictions"]
    assert ev.status == "warn"
    assert ev.data["evicted_keys"] > 0 and "policy allkeys-lru" in ev.evidence
    assert "maxmemory" in ev.fix

    client.config_resetstat()
    client.config_set("maxmemory-policy", "noeviction")
    full = diagnose_map(_at(settings, port), "redis.evictions")["redis.evictions"]
    assert full.status == "fail"
    assert "OOM" in full.fix


def test_hung_redis_costs_at_most_the_timeout(
    settings: Settings, silent_listener: int, diagnose_map: Diagnose
) -> None:
    import time

    start = time.monotonic()
    found = diagnose_map(
        _at(settings, silent_listener).model_copy(update={"doctor_check_timeout_s": 1.0}), "redis"
    )
    assert time.monotonic() - start < 3.0
    assert found["redis.reachable"].status == "fail"
    assert "timeout" in found["redis.reachable"].evidence.lower()
