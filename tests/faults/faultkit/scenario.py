"""The whole stack under steady load, and the faults injected into it one at a time.

:class:`FaultStack` owns everything it breaks: a fresh database reached through a TCP proxy as
a role with a connection limit, a private Redis, an in-memory broker, the three services as
separate processes, the load driver and the probes. :meth:`FaultStack.run_fault` injects one
fault, waits for the stack to heal by itself, and returns the figures of that fault.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from psycopg2.extras import execute_values
from sqlalchemy.engine import URL, make_url

from faultkit import accounting, kafka_log
from faultkit.infra_ctl import (
    BrokerCtl,
    ConnectionHog,
    RedisCtl,
    create_limited_role,
    drop_role,
)
from faultkit.load import LoadDriver
from faultkit.probe import Probe
from faultkit.proxy import TcpProxy
from faultkit.stack import Service, wait_until
from services.common import infra
from services.common.config import DEFAULT_DATABASE_URL, Settings
from services.common.kafka import ensure_topics
from services.runner import mint_token

SERVICES = ("ingestion", "prediction", "api")
ALL_FAULTS = (
    "postgres_unreachable",
    "redis_restart",
    "broker_restart",
    "sigkill_ingestion",
    "sigkill_prediction",
    "sigkill_api",
    "sigterm_ingestion",
    "sigterm_prediction",
    "sigterm_api",
    "db_pool_exhausted",
)


@dataclass
class Config:
    faults: tuple[str, ...] = ALL_FAULTS
    rate: float = 200.0  # ticks/s
    symbols: tuple[str, ...] = ("FLTA-USD", "FLTB-USD", "FLTC-USD", "FLTD-USD")
    pg_outage_s: float = 60.0
    redis_outage_s: float = 10.0
    broker_outage_s: float = 5.0
    pool_hold_s: float = 15.0
    kill_down_s: float = 2.0
    settle_s: float = 5.0
    post_s: float = 3.0
    recover_timeout_s: float = 120.0
    expected_duration_s: float = 1200.0  # sets the simulated clock's speed
    sim_hours: float = 22.0  # the load starts this far in the past
    history_days: int = 35  # hourly history before the load (ARIMA needs 30 days)
    role_limit: int = 30
    partitions: int = 3
    api_rate: float = 5.0
    # The load's producer batching. Each record batch is an object the in-memory test broker
    # keeps for good, and the broker's cost per fetch grows with their number (docs/faults.md,
    # "The test broker over a long run"): the soak batches for 100 ms, the short fault runs
    # per 5 ms.
    producer_linger_ms: int = 5
    # auto: TimescaleDB where the server has it (PRICECAST_FAULTS_STORAGE_PATH overrides)
    storage_path: str = field(
        default_factory=lambda: os.environ.get("PRICECAST_FAULTS_STORAGE_PATH", "auto")
    )


@dataclass
class FaultReport:
    fault: str
    ticks_produced: int
    ticks_acknowledged: int
    ticks_not_acknowledged: int
    ticks_stored: int
    duplicates: int
    lost_acknowledged: int
    lost_by_in_memory_broker: int
    acked_not_kept_by_broker: int  # acknowledged by the live broker, absent from its log
    fault_s: float
    recovery_to_ready_s: float | None
    drained_s: float | None  # heal -> every acknowledged tick of the phase stored
    api_answers_during_fault: dict[str, int]
    health_live_failures: int  # /health answers != 200 from a running service
    ready_during_fault: dict[str, dict[str, int]]  # service -> /health/ready status counts
    detailed_during_fault: dict[str, Any]
    closed_bars: dict[str, int]
    missing_forecasts: dict[str, list[str]]
    exit_code: int | None = None  # SIGKILL/SIGTERM faults: the service's exit status
    graceful: bool | None = None  # SIGTERM faults: finished its work and exited by itself
    shutdown_s: float | None = None
    notes: list[str] = field(default_factory=list)
    lost_examples: list[str] = field(default_factory=list)
    # group -> {partition: (committed, log end)}: offsets of a lost log (broker_restart)
    committed_beyond_end: dict[str, dict[int, tuple[int, int]]] = field(default_factory=dict)
    # service -> pricecast_consumer_offset_resets_total (the log-end watchdog acted)
    offset_resets: dict[str, float] = field(default_factory=dict)
    load_avg: tuple[float, float, float] = (0.0, 0.0, 0.0)  # os.getloadavg() at the end

    def ok(self) -> bool:
        return (
            self.duplicates == 0
            and self.lost_acknowledged == 0
            and self.recovery_to_ready_s is not None
            and self.drained_s is not None
            and self.health_live_failures == 0
            and not any(self.missing_forecasts.values())
        )


def _admin_url() -> URL:
    return make_url(os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL))


class FaultStack:
    def __init__(self, config: Config, work_dir: Path | None = None) -> None:
        self.cfg = config
        self._tmp = None if work_dir else tempfile.TemporaryDirectory(prefix="faults-")
        self.dir = Path(work_dir or self._tmp.name)  # type: ignore[union-attr]
        self.log_dir = self.dir / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        tag = uuid.uuid4().hex[:8]
        self.db_name = f"pricecast_faults_{tag}"
        self.role = f"pricecast_faults_{tag}"
        self.admin_url = _admin_url()
        self.symbols = list(config.symbols)
        self.services: dict[str, Service] = {}
        self.reports: list[FaultReport] = []
        self._started = False
        self.final_totals: dict[str, Any] | None = None
        self.not_in_log: set[tuple[str, datetime]] = set()
        self._log_read_at = 0.0
        self.cold_start_s = 0.0

    # --- lifecycle ---
    def __enter__(self) -> FaultStack:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self) -> None:
        cfg = self.cfg
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # the load's reconnect noise
        admin = sa.create_engine(
            self.admin_url.set(database="postgres"), isolation_level="AUTOCOMMIT"
        )
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{self.db_name}"'))
        admin.dispose()
        self._db_created = True
        db_url = self.admin_url.set(database=self.db_name)
        self._migrate(db_url.render_as_string(hide_password=False))
        create_limited_role(self.admin_url, self.db_name, self.role, cfg.role_limit)
        self._role_created = True
        self.engine = sa.create_engine(db_url, pool_size=2, pool_pre_ping=True)
        now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        self.load_start = now - timedelta(hours=cfg.sim_hours)
        self._history(self.load_start)

        self.proxy = TcpProxy(self.admin_url.host or "127.0.0.1", self.admin_url.port or 5432)
        self.proxy.start()
        self.redis = RedisCtl(self.log_dir)
        self.broker = BrokerCtl(self.log_dir)
        service_url = URL.create(
            "postgresql+psycopg2",
            username=self.role,
            host="127.0.0.1",
            port=self.proxy.port,
            database=self.db_name,
        )
        self.settings = Settings(
            DATABASE_URL=service_url.render_as_string(hide_password=False),
            REDIS_URL=self.redis.url,
            KAFKA_BOOTSTRAP_SERVERS=self.broker.bootstrap,
            kafka_partitions=cfg.partitions,
            env="test",
        )
        asyncio.run(ensure_topics(self.settings, timeout_s=20))
        self.hog = ConnectionHog(
            self.admin_url.set(username=self.role, database=self.db_name), cfg.role_limit
        )
        self.env = self._env()
        ports = {n: infra.free_port() for n in SERVICES}
        self.env.update(
            PRICECAST_INGEST_HEALTH_PORT=str(ports["ingestion"]),
            PRICECAST_PREDICT_HEALTH_PORT=str(ports["prediction"]),
            PRICECAST_API_PORT=str(ports["api"]),
        )
        argv = {
            "ingestion": ["ingest", "--role", "writer"],
            "prediction": ["predict"],
            "api": ["api"],
        }
        for name in SERVICES:
            self.services[name] = Service(name, argv[name], ports[name], self.env, self.log_dir)
        self._started = True
        for svc in self.services.values():
            svc.start()
        took = wait_until(lambda: self._all_ready() or self._dead(), 180)
        if self._dead():
            raise RuntimeError(f"{', '.join(self._dead())} exited at start:\n" + self.tails())
        self.cold_start_s = took or 0.0
        if took is None:
            raise RuntimeError("the stack did not become ready:\n" + self.tails())
        self.token = self._token()
        speed = cfg.sim_hours * 3600 / cfg.expected_duration_s
        self.load = LoadDriver(
            self.broker.bootstrap,
            self.settings.topic_prices,
            self.symbols,
            self.load_start,
            cfg.rate,
            speed,
            epoch=lambda: self.broker.epoch,
            linger_ms=cfg.producer_linger_ms,
        ).start()
        # Faults start once every symbol has a forecast the API serves (cached or not).
        warm = wait_until(lambda: bool(self._dead()) or self._api_serves_all(), 180, 1.0)
        if warm is None or self._dead():
            raise RuntimeError("the API never served every symbol's forecast:\n" + self.tails())
        self.probe = Probe(
            self.services["api"],
            list(self.services.values()),
            self.token,
            self.symbols,
            cfg.api_rate,
        ).start()
        self.started_at = time.monotonic()

    def _migrate(self, url: str) -> None:
        """``pricecast migrate`` in a child process, so the storage path setting applies."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PRICECAST_")}
        env.update(DATABASE_URL=url, PRICECAST_STORAGE_PATH=self.cfg.storage_path)
        out = subprocess.run(
            [sys.executable, "-m", "services.cli", "migrate"],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if out.returncode != 0:
            raise RuntimeError(f"migrate failed:\n{out.stdout}\n{out.stderr}")

    def _env(self) -> dict[str, str]:
        from services.runner import ensure_dev_keys

        private, public_dir = ensure_dev_keys(self.dir / "state")
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("PRICECAST_")
            and k not in ("DATABASE_URL", "REDIS_URL", "KAFKA_BOOTSTRAP_SERVERS")
        }
        env.update(
            DATABASE_URL=self.settings.database_url,
            REDIS_URL=self.settings.redis_url,
            KAFKA_BOOTSTRAP_SERVERS=self.settings.kafka_bootstrap_servers,
            PRICECAST_ENV="test",
            PRICECAST_STATE_DIR=str(self.dir / "state"),
            PRICECAST_JWT_PRIVATE_KEY_FILE=str(private),
            PRICECAST_JWT_PUBLIC_KEYS_DIR=str(public_dir),
            PRICECAST_KAFKA_PARTITIONS=str(self.cfg.partitions),
            PRICECAST_RATE_LIMIT_PER_MINUTE="1000000",
            PRICECAST_PREDICTION_WORKERS="2",
            PRICECAST_LOG_LEVEL="INFO",
        )
        return env

    def _token(self) -> str:
        return mint_token(self.env, "faults", "predictions:read prices:read", ttl_s=14400)

    def _history(self, before: datetime) -> None:
        """Hourly ticks for ``history_days`` before the load (written directly: setup)."""
        rng = random.Random(11)
        rows = []
        hours = self.cfg.history_days * 24
        for i, symbol in enumerate(self.symbols):
            price = 100.0 * (1 + i)
            for h in range(hours, 0, -1):
                price *= 1 + rng.gauss(0, 0.004)
                rows.append((symbol, before - timedelta(hours=h), price, 1.0, "history"))
        raw = self.engine.raw_connection()
        try:
            cur = raw.cursor()
            execute_values(
                cur,
                "INSERT INTO assets (symbol, first_seen) VALUES %s",
                [(s, before - timedelta(hours=hours)) for s in self.symbols],
            )
            execute_values(
                cur,
                "INSERT INTO price_ticks (symbol, ts, price, volume, source) VALUES %s",
                rows,
                page_size=5000,
            )
            raw.commit()
        finally:
            raw.close()

    def close(self) -> None:
        for name in ("probe", "load"):
            obj = getattr(self, name, None)
            if obj is not None:
                with contextlib.suppress(Exception):
                    obj.stop()
        for svc in self.services.values():
            with contextlib.suppress(Exception):
                svc.stop()
        if hasattr(self, "hog"):
            self.hog.release()
        for name in ("broker", "redis", "proxy"):
            obj = getattr(self, name, None)
            if obj is not None:
                with contextlib.suppress(Exception):
                    obj.stop() if name != "proxy" else obj.close()
        if hasattr(self, "engine"):
            self.engine.dispose()
        if getattr(self, "_db_created", False):
            admin = sa.create_engine(
                self.admin_url.set(database="postgres"), isolation_level="AUTOCOMMIT"
            )
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)'))
            admin.dispose()
        if getattr(self, "_role_created", False):
            with contextlib.suppress(Exception):
                drop_role(self.admin_url, self.role)
        if self._tmp is not None:
            self._tmp.cleanup()

    # --- observations ---
    def _dead(self) -> list[str]:
        return [name for name, svc in self.services.items() if not svc.alive]

    def _api_serves_all(self) -> bool:
        headers = {"Authorization": f"Bearer {self.token}"}
        for symbol in self.symbols:
            r = self.services["api"].get(
                f"/api/v1/predictions/{symbol}?interval=1h&horizon=1", headers=headers
            )
            if r is None or r.status_code != 200:
                return False
        return True

    def _all_ready(self) -> bool:
        return all(svc.ready() for svc in self.services.values())

    def tails(self, lines: int = 30) -> str:
        return "\n".join(
            f"--- {svc.name} (alive={svc.alive})\n{svc.log_tail(lines)}"
            for svc in self.services.values()
        )

    def detailed(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, svc in self.services.items():
            r = svc.get("/health/detailed", timeout=8.0)
            if r is None:
                out[name] = {"answer": None}
                continue
            body = (
                r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
            )
            out[name] = {
                "http": r.status_code,
                "status": body.get("status"),
                "services": body.get("services"),
            }
        return out

    def lag(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in ("ingestion", "prediction"):
            r = self.services[name].get("/health/detailed", timeout=8.0)
            body = r.json() if r is not None and r.status_code == 200 else {}
            if name == "ingestion":
                out[name] = (body.get("consumer_lag") or {}).get(
                    self.settings.consumer_group_writer
                )
            else:
                out[name] = (body.get("prediction") or {}).get("consumer_lag")
        return out

    def committed_beyond_end(self) -> dict[str, dict[int, tuple[int, int]]]:
        """Per consumer group, the partitions whose committed offset lies beyond the end of
        the live broker's ``prices`` log (see ``kafka_log.committed_beyond_end``)."""
        out: dict[str, dict[int, tuple[int, int]]] = {}
        for group in (self.settings.consumer_group_writer, self.settings.consumer_group_prediction):
            for attempt in range(3):
                try:
                    found = kafka_log.committed_beyond_end(
                        self.broker.bootstrap, group, self.settings.topic_prices
                    )
                    break
                except Exception as exc:  # noqa: BLE001 - retried; then reported as unread
                    error = f"{type(exc).__name__}: {exc}"
                    time.sleep(1.0 + attempt)
            else:
                # Partition -1: the offsets could not be read (the error is in the log).
                logging.getLogger(__name__).warning("committed offsets of %s: %s", group, error)
                found = {-1: (-1, -1)}
            if found:
                out[group] = found
        return out

    def offset_resets(self) -> dict[str, float]:
        """``pricecast_consumer_offset_resets_total`` of each worker (its ``/metrics``)."""
        out: dict[str, float] = {}
        for name in ("ingestion", "prediction"):
            r = self.services[name].get("/metrics")
            if r is None or r.status_code != 200:
                continue
            out[name] = sum(
                float(line.rsplit(" ", 1)[1])
                for line in r.text.splitlines()
                if line.startswith("pricecast_consumer_offset_resets_total{")
            )
        return out

    def _drained(self, phase: str | None) -> bool:
        """Every tick of ``phase`` (None: of the run) acknowledged by a live broker is stored,
        or is known to be absent from that broker's log."""
        killed = set(range(self.broker.epoch))
        wanted = {
            (a.symbol, a.ts)
            for a in self.load.acked_snapshot()
            if (phase is None or a.phase == phase) and a.epoch not in killed
        }
        if not wanted:
            return True
        missing = wanted - accounting.stored_keys(self.engine, self.symbols) - self.not_in_log
        if missing and time.monotonic() - self._log_read_at > 10.0:
            self._check_log(missing)
            missing -= self.not_in_log
        return not missing

    def _check_log(self, missing: set[tuple[str, datetime]]) -> None:
        """Read the live broker's ``prices`` log: an acknowledged tick absent from it was
        never kept by the broker (the writer cannot store it)."""
        self._log_read_at = time.monotonic()
        try:
            in_log = kafka_log.log_keys(self.broker.bootstrap, self.settings.topic_prices)
        except Exception:  # noqa: BLE001 - a diagnosis; retried on the next check
            return
        self.not_in_log |= {k for k in missing if k not in in_log}

    def _forecasts_done(self, until: datetime) -> dict[str, list[str]]:
        missing = accounting.missing_forecasts(
            self.engine,
            self.symbols,
            self.load_start,
            {"1h": self.settings.horizons_1h, "1d": self.settings.horizons_1d},
        )
        # bars that closed in the last simulated hour may still be in flight: not judged yet
        cut = until.isoformat()
        return {
            k: [m for m in v if m.split("@", 1)[1].split("(")[0] < cut] for k, v in missing.items()
        }

    # --- one fault ---
    def _outage(
        self,
        t_fault: float,
        outage_s: float,
        probe_by_s: float,
        stop: Callable[[], object],
        start: Callable[[], object],
    ) -> dict[str, Any]:
        """A dependency down for ``outage_s`` from ``t_fault``; ``/health/detailed`` as read
        while it is down (after ``probe_by_s`` at most, half the outage for short ones)."""
        stop()
        time.sleep(min(probe_by_s, outage_s / 2))
        detailed = self.detailed()
        time.sleep(max(0.0, outage_s - (time.monotonic() - t_fault)))
        start()
        return detailed

    def run_fault(self, fault: str) -> FaultReport:
        cfg = self.cfg
        self.load.set_phase(fault)
        time.sleep(cfg.settle_s)
        notes: list[str] = []
        exit_code: int | None = None
        shutdown_s: float | None = None
        graceful: bool | None = None
        down_service: str | None = None
        detailed: dict[str, Any] = {}
        t_fault = time.monotonic()
        if fault == "postgres_unreachable":
            detailed = self._outage(
                t_fault, cfg.pg_outage_s, 5.0, self.proxy.cut, self.proxy.restore
            )
        elif fault == "redis_restart":
            detailed = self._outage(
                t_fault, cfg.redis_outage_s, 4.0, self.redis.stop, self.redis.start
            )
        elif fault == "broker_restart":
            detailed = self._outage(
                t_fault,
                cfg.broker_outage_s,
                3.0,
                self.broker.kill,
                lambda: self.broker.start(self.settings),
            )
        elif fault.startswith(("sigkill_", "sigterm_")):
            down_service = fault.split("_", 1)[1]
            svc = self.services[down_service]
            sig = signal.SIGKILL if fault.startswith("sigkill_") else signal.SIGTERM
            t0 = time.monotonic()
            exit_code = svc.signal(sig)
            shutdown_s = round(time.monotonic() - t0, 2)
            if exit_code is None:
                notes.append(f"{down_service} did not exit within 40 s of {sig.name}; killed")
                svc.signal(signal.SIGKILL)
            elif sig == signal.SIGTERM:
                # uvicorn shuts down gracefully, then re-raises the signal (exit status -15)
                graceful = exit_code == 0 or (
                    exit_code == -signal.SIGTERM
                    and "Application shutdown complete" in svc.log_tail(10)
                )
            time.sleep(cfg.kill_down_s)
            detailed = self.detailed()
            svc.start()
        elif fault == "db_pool_exhausted":
            self.proxy.cut()
            held = self.hog.grab()
            self.proxy.restore()
            notes.append(f"held {held} of the role's {cfg.role_limit} connection slots")
            time.sleep(min(5.0, cfg.pool_hold_s / 2))
            detailed = self.detailed()
            time.sleep(max(0.0, cfg.pool_hold_s - (time.monotonic() - t_fault)))
            self.hog.release()
        else:
            raise ValueError(f"unknown fault {fault!r}")
        t_heal = time.monotonic()
        recovered = wait_until(self._all_ready, cfg.recover_timeout_s)
        t_ready = time.monotonic()
        time.sleep(cfg.post_s)
        self.load.set_phase(f"{fault}+after")
        self._log_read_at = time.monotonic()  # the broker's log is read after 10 s of waiting
        drained = wait_until(lambda: self._drained(fault), cfg.recover_timeout_s, 0.5)
        end_sim = self.load.sim_now() - timedelta(hours=1)
        wait_until(
            lambda: not any(self._forecasts_done(end_sim).values()), cfg.recover_timeout_s, 1.0
        )
        missing = self._forecasts_done(end_sim)
        t_end = time.monotonic()
        beyond: dict[str, dict[int, tuple[int, int]]] = {}
        if fault == "broker_restart":
            beyond = self.committed_beyond_end()

        stored = accounting.stored_keys(self.engine, self.symbols)
        acct = accounting.account(
            fault,
            self.load.stats.produced[fault],
            self.load.acked_snapshot(),
            self.load.unacked_snapshot(),
            stored,
            set(range(self.broker.epoch)),
            self.not_in_log,
        )
        live_failures = 0
        ready: dict[str, dict[str, int]] = {}
        for name in SERVICES:
            samples = self.probe.health_in(t_fault, t_ready, name)
            ready[name] = accounting.counts(s.ready for s in samples)
            if name != down_service:
                live_failures += sum(
                    1 for s in self.probe.health_in(t_fault, t_end, name) if s.live != 200
                )
        report = FaultReport(
            fault=fault,
            ticks_produced=acct.produced,
            ticks_acknowledged=acct.acknowledged,
            ticks_not_acknowledged=acct.not_acknowledged,
            ticks_stored=acct.stored,
            duplicates=accounting.duplicate_rows(self.engine, self.symbols)
            + accounting.bar_miscounts(self.engine, self.symbols, self.load_start),
            lost_acknowledged=acct.lost_acknowledged,
            lost_by_in_memory_broker=acct.lost_by_in_memory_broker,
            acked_not_kept_by_broker=acct.acked_not_kept_by_broker,
            fault_s=round(t_heal - t_fault, 2),
            recovery_to_ready_s=None if recovered is None else round(recovered, 2),
            drained_s=None
            if drained is None
            else round(t_ready - t_heal + cfg.post_s + drained, 2),
            api_answers_during_fault=self.probe.api_answers(t_fault, t_ready),
            health_live_failures=live_failures,
            ready_during_fault=ready,
            detailed_during_fault=detailed,
            closed_bars=accounting.closed_bars(self.engine, self.symbols, self.load_start),
            missing_forecasts=missing,
            exit_code=exit_code,
            graceful=graceful,
            shutdown_s=shutdown_s,
            notes=notes,
            lost_examples=acct.lost_examples,
            committed_beyond_end=beyond,
            offset_resets=self.offset_resets(),
            load_avg=os.getloadavg(),
        )
        self.reports.append(report)
        return report

    def totals(self, drain_s: float = 60.0) -> dict[str, Any]:
        """Every tick of the run (faults and the time between them): stops the load and waits
        until what it had acknowledged is stored."""
        if self.final_totals is not None:
            return self.final_totals
        self.load.set_phase("final")
        self.load.stop()
        self._log_read_at = time.monotonic()
        wait_until(lambda: self._drained(None), drain_s, 0.5)
        stored = accounting.stored_keys(self.engine, self.symbols)
        acked = self.load.acked_snapshot()
        killed = set(range(self.broker.epoch))
        missing = [a for a in acked if (a.symbol, a.ts) not in stored]
        dropped = [
            a for a in missing if a.epoch not in killed and (a.symbol, a.ts) in self.not_in_log
        ]
        self.final_totals = {
            "ticks_produced": sum(self.load.stats.produced.values()),
            "ticks_acknowledged": len(acked),
            "ticks_stored": len(stored),
            "lost_acknowledged": sum(1 for a in missing if a.epoch not in killed) - len(dropped),
            "acked_not_kept_by_broker": len(dropped),
            "lost_by_in_memory_broker": sum(1 for a in missing if a.epoch in killed),
            "broker_instances": self.broker.epoch + 1,
            "load_errors": dict(self.load.stats.errors),
            "run_s": round(time.monotonic() - self.started_at, 1),
        }
        return self.final_totals


def report_dict(r: FaultReport) -> dict[str, Any]:
    return asdict(r)


def format_table(reports: list[FaultReport]) -> str:
    head = (
        f"{'fault':22} {'produced':>8} {'acked':>7} {'stored':>7} {'dup':>4} {'lost':>5}"
        f" {'lostMB':>6} {'notkept':>7} {'ready_s':>7} {'drain_s':>7} {'load1':>5}"
        "  api answers during fault"
    )
    lines = [head]
    for r in reports:
        lines.append(
            f"{r.fault:22} {r.ticks_produced:8d} {r.ticks_acknowledged:7d} {r.ticks_stored:7d}"
            f" {r.duplicates:4d} {r.lost_acknowledged:5d} {r.lost_by_in_memory_broker:6d}"
            f" {r.acked_not_kept_by_broker:7d}"
            f" {r.recovery_to_ready_s!s:>7} {r.drained_s!s:>7} {r.load_avg[0]:5.2f}"
            f"  {r.api_answers_during_fault}"
        )
    return "\n".join(lines)
