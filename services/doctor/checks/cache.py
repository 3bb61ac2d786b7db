"""Redis: reachable, keyspace hit rate, evictions and the memory policy."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from services.doctor.model import CheckSpec, Context, Finding, probe_reachable, redis_label


def _connect_fix(error: str, label: str) -> str:
    low = error.lower()
    host_port = label.split("/", 1)[0]
    if "refused" in low:
        return (
            f"nothing listens on {host_port}: start Redis (or its pod) or point REDIS_URL at "
            "it; the API keeps serving from PostgreSQL (degraded) meanwhile"
        )
    if "auth" in low or "noauth" in low or "wrongpass" in low:
        return "Redis refused the credentials: fix the password in REDIS_URL (the Secret)"
    if "timeout" in low or "timed out" in low:
        return f"{host_port} does not answer in time: check network policy / firewall"
    if "name or service not known" in low or "resolve" in low:
        return f"host of {host_port} does not resolve: fix the host in REDIS_URL"
    return "check REDIS_URL and the Redis server's log"


def reachable(ctx: Context) -> Finding:
    label = redis_label(ctx.settings.redis_url)

    def answer() -> tuple[str, dict[str, Any]]:
        client = ctx.redis()
        client.ping()
        info: Mapping[str, Any] = client.info("server")
        evidence = f"Redis {info.get('redis_version', '?')} at {label} answered PING"
        return evidence, {"redis_version": info.get("redis_version")}

    return probe_reachable("redis.reachable", label, answer, _connect_fix)


def hit_rate(ctx: Context) -> Finding:
    """keyspace_hits / (hits + misses) since the server started (or CONFIG RESETSTAT)."""
    name = "redis.hit_rate"
    settings = ctx.settings
    stats: Mapping[str, Any] = ctx.redis().info("stats")
    hits = int(stats.get("keyspace_hits", 0))
    misses = int(stats.get("keyspace_misses", 0))
    total = hits + misses
    data: dict[str, Any] = {"hits": hits, "misses": misses}
    if total < settings.doctor_cache_min_lookups:
        return Finding(
            name, "ok", f"{total} lookups since start: too few to judge a hit rate", data=data
        )
    rate = hits / total
    data["hit_rate"] = round(rate, 4)
    evidence = f"hit rate {rate:.1%} ({hits} hits, {misses} misses since start/RESETSTAT)"
    if rate < settings.doctor_cache_hit_min:
        return Finding(
            name,
            "warn",
            f"{evidence} < {settings.doctor_cache_hit_min:.0%}",
            "is the prediction service writing prediction:* keys (redis-cli --scan --pattern "
            "'prediction:*' | head)? are TTLs too short (PRICECAST_PREDICTION_TTL_MARGIN_S)? "
            "evictions (redis.evictions)? misses for unknown/new symbols are expected; "
            "CONFIG RESETSTAT starts a fresh window",
            data,
        )
    return Finding(name, "ok", evidence, data=data)


def _mb(size: int) -> str:
    return f"{size / 1024 / 1024:.1f} MB"


def evictions(ctx: Context) -> Finding:
    """evicted_keys since start, and whether the memory policy can refuse writes."""
    name = "redis.evictions"
    client = ctx.redis()
    stats: Mapping[str, Any] = client.info("stats")
    memory: Mapping[str, Any] = client.info("memory")
    evicted = int(stats.get("evicted_keys", 0))
    used = int(memory.get("used_memory", 0))
    limit = int(memory.get("maxmemory", 0))
    policy = str(memory.get("maxmemory_policy", "?"))
    data = {"evicted_keys": evicted, "used_memory": used, "maxmemory": limit, "policy": policy}
    limit_text = f"maxmemory {_mb(limit)}" if limit else "no maxmemory"
    evidence = f"{evicted} keys evicted; used {_mb(used)}, {limit_text}, policy {policy}"
    if limit and policy == "noeviction" and used >= 0.9 * limit:
        return Finding(
            name,
            "fail",
            evidence,
            "writes will fail with OOM: raise maxmemory or set maxmemory-policy volatile-lru "
            "(every Pricecast key has a TTL)",
            data,
        )
    if evicted > 0:
        return Finding(
            name,
            "warn",
            evidence,
            "Redis is too small for the working set: raise maxmemory (and the pod's memory "
            "limit) or shorten TTLs; keep maxmemory-policy volatile-lru/allkeys-lru",
            data,
        )
    return Finding(name, "ok", evidence, data=data)


CHECKS = (
    CheckSpec("redis.reachable", reachable, about="Redis answers PING"),
    CheckSpec("redis.hit_rate", hit_rate, needs=("redis.reachable",)),
    CheckSpec("redis.evictions", evictions, needs=("redis.reachable",)),
)
