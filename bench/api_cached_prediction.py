"""api_cached_prediction: an authenticated, cached GET of a prediction against a bare FastAPI
route on the same server, in the same run (same workers, 64 keep-alive connections).

The server is ``create_app`` (every middleware, auth, rate limit, Redis) plus one bare route,
run by uvicorn (uvloop + httptools) in its own process; the load generator is ``wrk`` (or, when
wrk is not installed, an asyncio client in a separate process) on loopback. Also measures the
cache-miss path (token, Redis miss, one PostgreSQL round trip; re-caching disabled).
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import redis
import sqlalchemy as sa
from fastapi import FastAPI

from bench.common import bench_settings, percentile, write_result
from services.api.core.keys import ensure_dev_keys
from services.common import infra
from services.common.cache import prediction_key
from services.common.config import Settings, get_settings
from services.common.schemas import PredictionRecord

NAME = "api_cached_prediction"
CONNECTIONS = 64
DURATION_S = int(os.environ.get("BENCH_API_DURATION_S", "10"))
WARMUP_S = 3
WORKERS = int(os.environ.get("BENCH_API_WORKERS", "1"))
CACHED = "/api/v1/predictions/BTC-USD?interval=1d&horizon=1"
MISS = "/api/v1/predictions/BTC-USD?interval=1d&horizon=2"
BARE = "/bench/bare"


def bench_app() -> FastAPI:
    """The real app plus the baseline: a bare FastAPI route on the same server."""
    from services.api.main import create_app

    app = create_app(get_settings())

    @app.get(BARE, include_in_schema=False)
    async def bare() -> dict[str, str]:
        return {"status": "ok"}

    return app


# --- load generation ---------------------------------------------------------------------


def _wrk_ms(value: str) -> float:
    number, unit = re.match(r"([\d.]+)(us|ms|s)", value).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def run_wrk(url: str, headers: dict[str, str], duration_s: int) -> dict[str, float]:
    argv = ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{duration_s}s", "--latency", "--timeout", "5s"]
    for k, v in headers.items():
        argv += ["-H", f"{k}: {v}"]
    out = subprocess.run([*argv, url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    lat = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", out, re.M))
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return {
        "rps": rps,
        "p50_ms": _wrk_ms(lat["50"]),
        "p99_ms": _wrk_ms(lat["99"]),
        "errors": float(non2xx.group(1)) if non2xx else 0.0,
    }


async def _client_loop(
    host: str, port: int, raw: bytes, stop_at: float, samples: list[float], errors: list[int]
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            writer.write(raw)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))  # type: ignore[union-attr]
            await reader.readexactly(length)
            samples.append((time.perf_counter() - t0) * 1000)
            if not head.startswith(b"HTTP/1.1 2"):
                errors.append(1)
    finally:
        writer.close()


def _asyncio_generator(
    host: str, port: int, raw: bytes, duration_s: int, queue: Any
) -> None:  # runs in a separate process
    async def main() -> tuple[list[float], int]:
        samples: list[float] = []
        errors: list[int] = []
        stop_at = time.perf_counter() + duration_s
        await asyncio.gather(
            *(_client_loop(host, port, raw, stop_at, samples, errors) for _ in range(CONNECTIONS))
        )
        return samples, len(errors)

    try:
        import uvloop

        samples, errors = uvloop.run(main())
    except ImportError:
        samples, errors = asyncio.run(main())
    queue.put((samples, errors))


def run_asyncio(url: str, headers: dict[str, str], duration_s: int) -> dict[str, float]:
    parsed = httpx.URL(url)
    lines = [f"GET {parsed.raw_path.decode()} HTTP/1.1", f"Host: {parsed.host}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    raw = ("\r\n".join(lines) + "\r\n\r\n").encode()
    queue: Any = mp.get_context("spawn").Queue()
    proc = mp.get_context("spawn").Process(
        target=_asyncio_generator, args=(parsed.host, parsed.port, raw, duration_s, queue)
    )
    proc.start()
    samples, errors = queue.get(timeout=duration_s + 60)
    proc.join(10)
    return {
        "rps": len(samples) / duration_s,
        "p50_ms": percentile(samples, 50),
        "p99_ms": percentile(samples, 99),
        "errors": float(errors),
    }


def load(url: str, headers: dict[str, str], duration_s: int) -> dict[str, float]:
    if shutil.which("wrk"):
        return run_wrk(url, headers, duration_s)
    return run_asyncio(url, headers, duration_s)


# --- set-up -------------------------------------------------------------------------------


def _seed(settings: Settings) -> None:
    engine = sa.create_engine(settings.database_url)
    as_of = datetime(2026, 1, 10, tzinfo=UTC)
    record = PredictionRecord(
        symbol="BTC-USD",
        interval="1d",
        horizon=1,
        as_of=as_of,
        target_time=as_of + timedelta(days=1),
        predicted_price=97_123.5,
        lower_bound=95_000.0,
        upper_bound=99_000.0,
        model="arima",
        model_version="arima-bench",
        generated_at=as_of + timedelta(minutes=1),
    )
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO assets (symbol, name) VALUES ('BTC-USD', 'Bitcoin')"))
        for horizon in (1, 2):
            conn.execute(
                sa.text(
                    "INSERT INTO predictions (symbol, interval, horizon, as_of, target_time, "
                    "predicted_price, lower_bound, upper_bound, model, model_version, "
                    "generated_at) VALUES ('BTC-USD', '1d', :h, :a, :t, :p, :l, :u, 'arima', "
                    "'arima-bench', :g)"
                ),
                {
                    "h": horizon,
                    "a": as_of,
                    "t": as_of + timedelta(days=horizon),
                    "p": record.predicted_price,
                    "l": record.lower_bound,
                    "u": record.upper_bound,
                    "g": record.generated_at,
                },
            )
    engine.dispose()
    client = redis.Redis.from_url(settings.redis_url)
    client.flushdb()
    client.set(prediction_key("BTC-USD", "1d", 1), record.model_dump_json())
    client.close()


def main() -> None:
    with bench_settings() as settings, tempfile.TemporaryDirectory() as state:
        _seed(settings)
        private, public = ensure_dev_keys(Path(state))
        port = infra.free_port()
        env = {
            **os.environ,
            "DATABASE_URL": settings.database_url,
            "REDIS_URL": settings.redis_url,
            "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
            "PRICECAST_JWT_PRIVATE_KEY_FILE": str(private),
            "PRICECAST_JWT_PUBLIC_KEYS_DIR": str(public),
            "PRICECAST_RATE_LIMIT_PER_MINUTE": str(10**9),
            "PRICECAST_API_MISS_CACHE_TTL_S": "0",
            "PRICECAST_LOG_LEVEL": "WARNING",
            "PRICECAST_ENV": "test",
        }
        server = subprocess.Popen(
            [
                sys.executable, "-m", "uvicorn", "bench.api_cached_prediction:bench_app",
                "--factory", "--host", "127.0.0.1", "--port", str(port),
                "--workers", str(WORKERS), "--loop", "uvloop", "--http", "httptools",
                "--no-access-log", "--log-level", "warning",
            ],
            env=env,
        )  # fmt: skip
        try:
            infra.wait_tcp("127.0.0.1", port, 30, server)
            base = f"http://127.0.0.1:{port}"
            token = subprocess.run(
                [sys.executable, "-m", "services.cli", "token", "--subject", "bench",
                 "--scopes", "predictions:read"],
                env=env, capture_output=True, text=True, check=True,
            ).stdout.strip()  # fmt: skip
            auth = {"Authorization": f"Bearer {token}"}
            for path, headers in ((CACHED, auth), (MISS, auth), (BARE, {})):
                r = httpx.get(base + path, headers=headers, timeout=10)
                assert r.status_code == 200, (path, r.status_code, r.text)
            cached_body = httpx.get(base + CACHED, headers=auth).content
            assert b"arima-bench" in cached_body

            load(base + BARE, {}, WARMUP_S)
            load(base + CACHED, auth, WARMUP_S)
            bare = load(base + BARE, {}, DURATION_S)
            cached = load(base + CACHED, auth, DURATION_S)
            miss = load(base + MISS, auth, DURATION_S)
        finally:
            server.terminate()
            server.wait(15)

    ratio = cached["rps"] / bare["rps"]
    write_result(
        NAME,
        cached["rps"],
        "req/s",
        {"name": "bare_fastapi_route_same_server", "value": round(bare["rps"], 1), "unit": "req/s"},
        {
            "connections": CONNECTIONS,
            "duration_s": DURATION_S,
            "workers": WORKERS,
            "server": "uvicorn (uvloop, httptools)",
            "load_generator": "wrk -t1" if shutil.which("wrk") else "asyncio client process",
            "path": CACHED,
        },
        extra={
            "p50_ms": round(cached["p50_ms"], 3),
            "p99_ms": round(cached["p99_ms"], 3),
            "errors": cached["errors"],
            "bare_p50_ms": round(bare["p50_ms"], 3),
            "bare_p99_ms": round(bare["p99_ms"], 3),
            "miss_rps": round(miss["rps"], 1),
            "miss_p50_ms": round(miss["p50_ms"], 3),
            "miss_p99_ms": round(miss["p99_ms"], 3),
            "miss_errors": miss["errors"],
            "targets": {"ratio_min": 0.6, "p99_ms_max": 15.0},
        },
        ratio=ratio,
    )


if __name__ == "__main__":
    main()
