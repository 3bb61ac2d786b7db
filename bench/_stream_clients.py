"""Client processes of the ``stream_fanout`` benchmark: WebSocket subscribers (measuring or
idle) and the bare aiokafka consumer of the baseline, each an asyncio loop in a process of its
own, started and stopped through :class:`Procs`."""

from __future__ import annotations

import asyncio
import gc
import multiprocessing as mp
import time
from datetime import datetime
from typing import Any

import orjson

from services.common.config import get_settings

SYMBOL = "FAN-USD"
CHANNEL = f"predictions:{SYMBOL}:1h"
FETCH_WAIT_MS = get_settings().stream_fetch_max_wait_ms


async def _open(url: str, token: str, n: int, subscribe: bool) -> list[Any]:
    from websockets.asyncio.client import connect

    headers = {"Authorization": f"Bearer {token}"}
    sem = asyncio.Semaphore(50)
    sub = orjson.dumps({"type": "subscribe", "channels": [CHANNEL]})

    async def one() -> Any:
        async with sem:
            for attempt in range(20):
                try:
                    ws = await connect(
                        url, additional_headers=headers, open_timeout=60, compression=None
                    )
                    break
                except OSError:
                    await asyncio.sleep(0.2 * (attempt + 1))
            else:
                raise RuntimeError("could not connect")
            if subscribe:
                await ws.send(sub.decode())
                while orjson.loads(await ws.recv())["type"] != "snapshot":
                    pass
            return ws

    return list(await asyncio.gather(*(one() for _ in range(n))))


def _client_proc(url: str, token: str, n: int, ready: Any, stop: Any, out: Any) -> None:
    async def main() -> None:
        conns = await _open(url, token, n, subscribe=True)
        quiet_gc()
        ready.put(n)
        samples: list[float] = []
        counts = [0] * len(conns)
        warmed: set[int] = set()

        async def read(i: int, ws: Any) -> None:
            async for raw in ws:
                now = time.time()
                msg = orjson.loads(raw)
                if msg["type"] != "prediction":
                    continue
                if msg["data"]["model_version"] == "bench":
                    born = datetime.fromisoformat(msg["data"]["generated_at"]).timestamp()
                    samples.append((now - born) * 1000)
                    counts[i] += 1
                elif i not in warmed:  # a warm-up marker: this connection is fed
                    warmed.add(i)
                    if len(warmed) == len(conns):
                        ready.put(len(conns))

        readers = [asyncio.create_task(read(i, ws)) for i, ws in enumerate(conns)]
        await asyncio.to_thread(stop.wait)  # a multiprocessing Event: wait in a thread
        for r in readers:
            r.cancel()
        out.put((samples, counts))
        await asyncio.gather(*(ws.close() for ws in conns), return_exceptions=True)

    _run(main())


def _idle_proc(url: str, token: str, n: int, subscribe: bool, ready: Any, stop: Any) -> None:
    async def main() -> None:
        conns = await _open(url, token, n, subscribe)
        ready.put(n)
        await asyncio.to_thread(stop.wait)
        await asyncio.gather(*(ws.close() for ws in conns), return_exceptions=True)

    _run(main())


def _baseline_proc(bootstrap: str, topic: str, ready: Any, stop: Any, out: Any) -> None:
    async def main() -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="latest",
            fetch_max_wait_ms=FETCH_WAIT_MS,
        )
        await consumer.start()
        await consumer.topics()
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        consumer.assign(parts)
        for tp in parts:
            await consumer.position(tp)
        quiet_gc()
        ready.put(1)
        samples: list[float] = []
        warmed = False
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=100)
            now = time.time()
            for records in batches.values():
                for r in records:
                    data = orjson.loads(r.value)
                    if not warmed and data["model_version"] == "warmup":
                        warmed = True
                        ready.put(1)
                    elif data["model_version"] == "bench":
                        born = datetime.fromisoformat(data["generated_at"]).timestamp()
                        samples.append((now - born) * 1000)
        out.put(samples)
        await consumer.stop()

    _run(main())


def quiet_gc() -> None:
    """No cyclic-GC pauses in a measuring process: a full collection over 500 connections
    takes tens of milliseconds and would be charged to the server as delivery latency."""
    gc.collect()
    gc.freeze()
    gc.disable()


def _run(coro: Any) -> None:
    try:
        import uvloop

        uvloop.run(coro)
    except ImportError:
        asyncio.run(coro)


class Procs:
    """Child processes with a shared stop event; ``ready`` counts what they opened."""

    def __init__(self) -> None:
        self.ctx = mp.get_context("spawn")
        self.stop = self.ctx.Event()
        self.ready: Any = self.ctx.Queue()
        self.out: Any = self.ctx.Queue()
        self.procs: list[Any] = []

    def start(self, target: Any, *args: Any) -> None:
        p = self.ctx.Process(target=target, args=(*args, self.ready, self.stop, *self._out(target)))
        p.start()
        self.procs.append(p)

    def _out(self, target: Any) -> tuple[Any, ...]:
        return () if target is _idle_proc else (self.out,)

    def wait_ready(self, total: int, timeout_s: float = 600) -> None:
        got, deadline = 0, time.monotonic() + timeout_s
        while got < total:
            got += self.ready.get(timeout=max(1.0, deadline - time.monotonic()))

    def ready_count(self) -> int:
        """What the children reported since the last call (non-blocking)."""
        got = 0
        while True:
            try:
                got += self.ready.get_nowait()
            except Exception:  # noqa: BLE001 - queue.Empty from another module
                return got

    def finish(self, results: int) -> list[Any]:
        self.stop.set()
        found = [self.out.get(timeout=120) for _ in range(results)]
        for p in self.procs:
            p.join(30)
            if p.is_alive():
                p.kill()
        return found


def _split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]
