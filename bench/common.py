"""Helpers every benchmark uses: percentiles, the result file, throw-away infrastructure."""

from __future__ import annotations

import json
import os
import platform
import statistics
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis

from services.common import infra
from services.common.config import DEFAULT_REDIS_URL, Settings
from services.common.db import scratch_database

RESULTS = Path(__file__).parent / "results"


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q / 100.0
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def latency_extra(samples_ms: Sequence[float]) -> dict[str, float]:
    return {
        "p50_ms": round(percentile(samples_ms, 50), 3),
        "p99_ms": round(percentile(samples_ms, 99), 3),
        "mean_ms": round(statistics.fmean(samples_ms), 3),
        "samples": len(samples_ms),
    }


def write_result(
    name: str,
    value: float,
    unit: str,
    baseline: dict[str, Any],
    conditions: dict[str, Any],
    extra: dict[str, Any] | None = None,
    ratio: float | None = None,
) -> dict[str, Any]:
    if ratio is None:
        ratio = value / baseline["value"] if baseline.get("value") else float("nan")
    result = {
        "name": name,
        "value": round(float(value), 4),
        "unit": unit,
        "baseline": baseline,
        "ratio": round(float(ratio), 4),
        "conditions": {**conditions, "cpus": os.cpu_count(), "python": platform.python_version()},
        "extra": extra or {},
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


@contextmanager
def bench_settings(**overrides: Any) -> Iterator[Settings]:
    """A fresh migrated database, a Redis db and a Tansu broker, torn down afterwards."""
    with scratch_database("pricecast_bench") as url:
        broker = infra.start_tansu()
        try:
            redis_base = os.environ.get("REDIS_URL", DEFAULT_REDIS_URL).rsplit("/", 1)[0]
            redis_url = f"{redis_base}/15"
            with redis.Redis.from_url(redis_url) as client:
                client.flushdb()  # db 15 is the benchmarks' own: never read an old run's keys
            yield Settings(
                DATABASE_URL=url,
                REDIS_URL=redis_url,
                KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap,
                env="test",
                **overrides,
            )
        finally:
            broker.stop()


@contextmanager
def private_redis() -> Iterator[str]:
    """A redis-server of the benchmark's own, on a free port; yields its URL. Other benchmarks
    flush the shared benchmark database (15) when they start, which would wipe a seeded cache."""
    server = infra.RedisServer()
    try:
        yield server.url
    finally:
        server.stop()


def api_env(settings: Settings, redis_url: str, state_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of an API process under benchmark: the run's database, Redis and broker,
    development keys under ``state_dir``, rate limits lifted, warnings-only logs; ``extra`` on
    top (``PRICECAST_*`` names)."""
    from services.api.core.keys import ensure_dev_keys

    private, public = ensure_dev_keys(state_dir)
    return {
        **infra.export_env(settings),
        "REDIS_URL": redis_url,
        "PRICECAST_JWT_PRIVATE_KEY_FILE": str(private),
        "PRICECAST_JWT_PUBLIC_KEYS_DIR": str(public),
        "PRICECAST_RATE_LIMIT_PER_MINUTE": str(10**9),
        "PRICECAST_LOG_LEVEL": "WARNING",
        "PRICECAST_ENV": "test",
        **extra,
    }


def mint_token(env: dict[str, str], scopes: str, ttl_s: int | None = None) -> str:
    """An access token for subject ``bench``, minted by the CLI with ``env``'s keys."""
    from services.runner import mint_token as mint

    return mint(env, "bench", scopes, ttl_s)
