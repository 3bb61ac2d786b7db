"""stream_fanout: live-stream fan-out of one API worker, against a bare Kafka consumer.

Three measurements, each on a fresh API process (uvicorn, one worker, the options of
``services/api/server.py``) over a Tansu broker, PostgreSQL and a private Redis:

1. **Delivery latency** (the headline): ``BENCH_STREAM_SUBSCRIBERS`` (1,000) WebSocket
   clients, spread over ``BENCH_STREAM_CLIENT_PROCS`` client processes, subscribe to one
   ``predictions:`` channel; the bench publishes one prediction record every
   ``BENCH_STREAM_INTERVAL_MS`` (500) for ``BENCH_STREAM_DURATION_S`` (60): a latency
   measurement, not a throughput one (at 100 ms, 10,000 deliveries a second, the worker
   spends about a third of a core on them and on this shared 2-core machine it queues).
   Latency per delivery = the client's receive time minus the record's publish time (its
   ``generated_at``, also its Kafka timestamp). The baseline, same run, same messages: a bare
   aiokafka consumer (no group, every partition, the same fetch wait) in a process of its own.
2. **Idle connection memory**: RSS growth of the API process for 5,000 authenticated,
   subscribed, idle WebSocket connections, divided by 5,000; baseline: the same number of
   connections to a bare Starlette WebSocket route (accept, then receive) on a fresh process of
   the same app and server options.
3. **REST under fan-out**: saturation rps of the cached ``GET /api/v1/predictions`` path (the
   ``api_cached_prediction`` measurement) with 1,000 subscribers connected, against the same
   server without them (rounds taken before and after).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fastapi import FastAPI, WebSocket

from bench._stream_clients import (
    FETCH_WAIT_MS,
    SYMBOL,
    Procs,
    _baseline_proc,
    _client_proc,
    _idle_proc,
    _split,
)
from bench.api_cached_prediction import _seed, load_avg, profiled, saturate
from bench.common import (
    api_env,
    bench_settings,
    latency_extra,
    mint_token,
    private_redis,
    write_result,
)
from services.common import infra
from services.common.config import get_settings
from services.common.kafka import ensure_topics, make_producer
from services.common.schemas import PredictionRecord

NAME = "stream_fanout"
SUBSCRIBERS = int(os.environ.get("BENCH_STREAM_SUBSCRIBERS", "1000"))
IDLE = int(os.environ.get("BENCH_STREAM_IDLE", "5000"))
CLIENT_PROCS = int(os.environ.get("BENCH_STREAM_CLIENT_PROCS", "2"))
DURATION_S = float(os.environ.get("BENCH_STREAM_DURATION_S", "60"))
INTERVAL_MS = float(os.environ.get("BENCH_STREAM_INTERVAL_MS", "500"))
REST_ROUNDS = int(os.environ.get("BENCH_STREAM_REST_ROUNDS", "3"))
REST_SLICE_S = float(os.environ.get("BENCH_STREAM_REST_SLICE_S", "3"))
PROFILE = os.environ.get("BENCH_STREAM_PROFILE")  # py-spy raw stacks of the API, latency phase
BARE_WS = "/bench/ws"
CACHED = "/api/v1/predictions/BTC-USD?interval=1d&horizon=1"


def bench_app() -> FastAPI:
    """The real app plus the memory baseline: a bare WebSocket route on the same server."""
    from services.api.main import create_app

    app = create_app(get_settings())

    @app.websocket(BARE_WS)
    async def bare(ws: WebSocket) -> None:
        await ws.accept()
        while (await ws.receive())["type"] != "websocket.disconnect":
            pass

    return app


def _serve(port: int) -> None:  # the API process (options as services/api/server.py)
    import uvicorn

    from services.api.server import websocket_options

    uvicorn.run(
        "bench.stream_fanout:bench_app",
        factory=True,
        host="127.0.0.1",
        port=port,
        workers=1,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=5,
        **websocket_options(get_settings()),
    )


@contextmanager
def api_server(env: dict[str, str]) -> Iterator[tuple[int, int]]:
    port = infra.free_port()
    code = f"from bench.stream_fanout import _serve; _serve({port})"
    proc = subprocess.Popen([sys.executable, "-c", code], env=env)
    try:
        infra.wait_tcp("127.0.0.1", port, 60, proc)
        yield port, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


# --- the three measurements --------------------------------------------------------------------


def _record(k: int, version: str) -> PredictionRecord:
    now = datetime.now(UTC)
    as_of = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(hours=k)
    return PredictionRecord(
        symbol=SYMBOL,
        interval="1h",
        horizon=1 + k % 24,
        as_of=as_of,
        target_time=as_of + timedelta(hours=1 + k % 24),
        predicted_price=100.0 + k,
        lower_bound=90.0,
        upper_bound=110.0,
        model="arima",
        model_version=version,
        generated_at=now,
    )


async def _publish(settings: Any, warm: Any, total: int) -> int:
    """Warm-up markers until every reader saw one (``warm()``), then ``total`` records."""
    producer = make_producer(settings, linger_ms=0)
    await producer.start()
    try:
        k = 0
        deadline = time.monotonic() + 120
        while not warm():
            assert time.monotonic() < deadline, "stream never delivered the warm-up markers"
            r = _record(k, "warmup")
            await producer.send_and_wait(settings.topic_predictions, r.model_dump_json().encode())
            k += 1
            await asyncio.sleep(0.5)
        await asyncio.sleep(1.0)
        start = time.perf_counter()
        for i in range(total):
            due = start + i * INTERVAL_MS / 1000
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            r = _record(k + i, "bench")
            ts = int(r.generated_at.timestamp() * 1000)
            await producer.send(
                settings.topic_predictions,
                r.model_dump_json().encode(),
                key=SYMBOL.encode(),
                timestamp_ms=ts,
            )
        await producer.flush()
        await asyncio.sleep(3.0)  # the last deliveries
        return total
    finally:
        await producer.stop()


def latency(env: dict[str, str], settings: Any, token: str) -> dict[str, Any]:
    total = int(DURATION_S * 1000 / INTERVAL_MS)
    with api_server(env) as (port, pid):
        url = f"ws://127.0.0.1:{port}/api/v1/stream"
        procs = Procs()
        for n in _split(SUBSCRIBERS, CLIENT_PROCS):
            procs.start(_client_proc, url, token, n)
        procs.wait_ready(SUBSCRIBERS)
        procs.start(_baseline_proc, settings.kafka_bootstrap_servers, settings.topic_predictions)
        procs.wait_ready(1)
        rss_connected = rss_kb(pid)
        load = {"start": load_avg()}
        cpu_before = cpu_s(pid)
        # Warm-up: the feeds read from the end, so wait until markers reach every reader.
        warmed = [0]

        def warm() -> bool:
            warmed[0] += procs.ready_count()
            return warmed[0] >= SUBSCRIBERS + 1

        with profiled(pid, round(DURATION_S + 10), PROFILE):
            asyncio.run(_publish(settings, warm, total))
        server_cpu = cpu_s(pid) - cpu_before
        load["end"] = load_avg()
        results = procs.finish(CLIENT_PROCS + 1)
        rss_end = rss_kb(pid)
    baseline = next(r for r in results if isinstance(r, list))
    clients = [r for r in results if isinstance(r, tuple)]
    samples = [x for s, _ in clients for x in s]
    counts = [c for _, cs in clients for c in cs]
    return {
        "published": total,
        "deliveries": len(samples),
        "expected_deliveries": total * SUBSCRIBERS,
        "min_per_client": min(counts) if counts else 0,
        "samples_ms": samples,
        "baseline_ms": baseline,
        "rss_connected_kb": rss_connected,
        "server_cpu_s": round(server_cpu, 3),
        "rss_end_kb": rss_end,
        "load_avg": load,
    }


def idle_memory(env: dict[str, str], token: str, path: str, subscribe: bool) -> dict[str, Any]:
    with api_server(env) as (port, pid):
        url = f"ws://127.0.0.1:{port}{path}"
        warm = Procs()  # one connection first: lazily built state is not charged to the rest
        warm.start(_idle_proc, url, token, 1, subscribe)
        warm.wait_ready(1)
        time.sleep(1.0)
        before = rss_kb(pid)
        procs = Procs()
        for n in _split(IDLE, CLIENT_PROCS):
            procs.start(_idle_proc, url, token, n, subscribe)
        procs.wait_ready(IDLE)
        time.sleep(2.0)
        after = rss_kb(pid)
        procs.stop.set()
        warm.stop.set()
        for p in procs.procs + warm.procs:
            p.join(60)
    return {"rss_before_kb": before, "rss_after_kb": after, "per_conn_kb": (after - before) / IDLE}


def rest_under_fanout(env: dict[str, str], token: str, auth: dict[str, str]) -> dict[str, Any]:
    with api_server(env) as (port, _):
        url = f"http://127.0.0.1:{port}{CACHED}"
        saturate(url, auth, 2.0)  # warm-up
        without = [saturate(url, auth, REST_SLICE_S)["rps"] for _ in range(REST_ROUNDS)]
        procs = Procs()
        ws = f"ws://127.0.0.1:{port}/api/v1/stream"
        for n in _split(SUBSCRIBERS, CLIENT_PROCS):
            procs.start(_idle_proc, ws, token, n, True)
        procs.wait_ready(SUBSCRIBERS)
        with_subs = [saturate(url, auth, REST_SLICE_S)["rps"] for _ in range(REST_ROUNDS)]
        procs.stop.set()
        for p in procs.procs:
            p.join(60)
        without += [saturate(url, auth, REST_SLICE_S)["rps"] for _ in range(REST_ROUNDS)]
    base = sum(without) / len(without)
    ours = sum(with_subs) / len(with_subs)
    return {
        "rps_with_subscribers": round(ours, 1),
        "rps_without": round(base, 1),
        "ratio": round(ours / base, 4),
        "rounds_with": [round(x) for x in with_subs],
        "rounds_without": [round(x) for x in without],
    }


def main() -> None:
    with (
        private_redis() as redis_url,
        bench_settings() as settings,
        tempfile.TemporaryDirectory() as state,
    ):
        asyncio.run(ensure_topics(settings))
        _seed(settings, redis_url)
        env = api_env(
            settings,
            redis_url,
            Path(state),
            # One subject for every bench connection: lift the per-subject limits.
            PRICECAST_STREAM_MAX_CONNECTIONS_PER_SUBJECT=str(10**6),
            PRICECAST_STREAM_CONNECTS_PER_MINUTE=str(10**9),
            PRICECAST_STREAM_QUEUE_SIZE="256",
        )
        token = mint_token(env, "predictions:read prices:read", ttl_s=7200)
        auth = {"Authorization": f"Bearer {token}"}
        lat = latency(env, settings, token)
        ours_mem = idle_memory(env, token, "/api/v1/stream", subscribe=True)
        bare_mem = idle_memory(env, token, BARE_WS, subscribe=False)
        rest = rest_under_fanout(env, token, auth)
    _report(lat, ours_mem, bare_mem, rest)


def _report(
    lat: dict[str, Any], ours_mem: dict[str, Any], bare_mem: dict[str, Any], rest: dict[str, Any]
) -> None:
    ours, base = latency_extra(lat["samples_ms"]), latency_extra(lat["baseline_ms"])
    delivered = lat["deliveries"] / lat["expected_deliveries"]
    targets = {"p99_ms_max": 100.0, "idle_kb_per_conn_max": 64.0, "rest_ratio_min": 0.9}
    meets = {
        "p99": ours["p99_ms"] <= targets["p99_ms_max"],
        "idle_memory": ours_mem["per_conn_kb"] <= targets["idle_kb_per_conn_max"],
        "rest_ratio": rest["ratio"] >= targets["rest_ratio_min"],
    }
    write_result(
        NAME,
        ours["p99_ms"],
        "ms (p99 delivery, Kafka publish -> client)",
        {"name": "bare_aiokafka_consumer_p99", "value": base["p99_ms"], "unit": "ms"},
        {
            "subscribers": SUBSCRIBERS,
            "api_workers": 1,
            "client_processes": CLIENT_PROCS,
            "messages": lat["published"],
            "interval_ms": INTERVAL_MS,
            "channel": "all subscribers on one predictions channel",
            "fetch_max_wait_ms": FETCH_WAIT_MS,
            "broker": "Tansu (local, in memory)",
            "server": "uvicorn, one worker, options of services/api/server.py",
            "latency": "client receive time minus the record's publish time (generated_at = "
            "Kafka timestamp), same clock; baseline: a bare aiokafka consumer (no group, all "
            "partitions, same fetch wait) in its own process, same messages; every measuring "
            "process runs with the cyclic GC frozen and off (its pauses are the tool's)",
            "idle_connections": IDLE,
            "idle_memory": "RSS growth of the API process for authenticated, subscribed, idle "
            "WebSockets / connections, after one warm-up connection; baseline: a bare Starlette "
            "WebSocket route (accept + receive) on a fresh process of the same app",
            "rest": f"cached GET saturation rps ({REST_ROUNDS} x {REST_SLICE_S:g} s rounds) "
            f"with {SUBSCRIBERS} idle subscribers connected vs rounds before and after without",
            "load_avg_1_5_15_at_start": lat["load_avg"]["start"],
            "load_avg_1_5_15_at_end": lat["load_avg"]["end"],
        },
        extra={
            "p50_ms": ours["p50_ms"],
            "p99_ms": ours["p99_ms"],
            "mean_ms": ours["mean_ms"],
            "baseline_p50_ms": base["p50_ms"],
            "baseline_p99_ms": base["p99_ms"],
            "deliveries": lat["deliveries"],
            # The API process's CPU during the publishing phase (warm-up included) per
            # delivery: what one worker pays per message and subscriber, load-independent.
            "server_cpu_us_per_delivery": round(lat["server_cpu_s"] / lat["deliveries"] * 1e6, 2)
            if lat["deliveries"]
            else None,
            "delivered_fraction": round(delivered, 6),
            "min_messages_per_client": lat["min_per_client"],
            "api_rss_with_subscribers_kb": lat["rss_connected_kb"],
            "api_rss_end_kb": lat["rss_end_kb"],
            "idle_kb_per_connection": round(ours_mem["per_conn_kb"], 2),
            "idle_baseline_kb_per_connection": round(bare_mem["per_conn_kb"], 2),
            "idle_memory": ours_mem,
            "idle_memory_baseline": bare_mem,
            "api_cached_prediction_ratio_with_subscribers": rest["ratio"],
            "rest": rest,
            "targets": targets,
            "meets_targets": meets,
        },
    )


if __name__ == "__main__":
    main()
