"""What a doctor check is and what it answers.

A check is a plain function ``(Context) -> Finding``. It names one dependency or one known
failure mode, says ``ok``/``warn``/``fail`` (or ``skip`` when a dependency it needs is down),
shows its evidence (a figure, a query result or the error) and the fix in one line.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import redis
import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url

from services.common.config import Settings

if TYPE_CHECKING:
    from services.api.core.keys import KeySet

Status = Literal["ok", "warn", "fail", "skip"]


@dataclass
class Finding:
    name: str
    status: Status
    evidence: str
    fix: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    duration_ms: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


CheckFunc = Callable[["Context"], Finding]


@dataclass(frozen=True)
class CheckSpec:
    """A registered check: it runs after every check it ``needs`` and is skipped when one of
    them did not pass (``ok``/``warn``)."""

    name: str
    func: CheckFunc
    needs: tuple[str, ...] = ()
    timeout_factor: float = 1.0
    about: str = ""


class Context:
    """Settings plus lazily created, bounded clients shared by the checks of one run.

    Every client has its own connect and read timeouts, so that a dead dependency costs at
    most ``doctor_check_timeout_s`` even before the scheduler's own deadline.
    """

    def __init__(self, settings: Settings, environ: Mapping[str, str] | None = None) -> None:
        self.settings = settings
        self.environ: Mapping[str, str] = os.environ if environ is None else environ
        self.timeout_s = settings.doctor_check_timeout_s
        self._engine: Engine | None = None
        self._redis: redis.Redis | None = None
        self._lock = threading.Lock()  # checks run in threads and share the clients
        self.kafka_brokers: list[tuple[int, str, int]] = []  # (node id, host, port) advertised
        self.keyset: KeySet | None = None  # set by auth.jwt_keys

    # --- PostgreSQL ----------------------------------------------------------------------
    def engine(self) -> Engine:
        with self._lock:
            if self._engine is None:
                self._engine = make_doctor_engine(self.settings, self.timeout_s)
            return self._engine

    @property
    def database_label(self) -> str:
        return database_label(self.settings.database_url)

    # --- Redis ---------------------------------------------------------------------------
    def redis(self) -> redis.Redis:
        with self._lock:
            if self._redis is None:
                self._redis = redis.Redis.from_url(
                    self.settings.redis_url,
                    # below the scheduler's deadline, so the client's own error is the evidence
                    socket_timeout=self.timeout_s * 0.7,
                    socket_connect_timeout=min(self.timeout_s * 0.7, 3.0),
                )
            return self._redis

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
        if self._redis is not None:
            self._redis.close()


def make_doctor_engine(settings: Settings, timeout_s: float, **overrides: Any) -> Engine:
    """A small engine (two connections at most) that never waits longer than ``timeout_s``."""
    options: dict[str, Any] = {
        "pool_size": 2,
        "max_overflow": 0,
        "pool_timeout": timeout_s,
        "connect_args": {
            "connect_timeout": max(2, int(min(timeout_s, 5))),
            "options": f"-c statement_timeout={int(timeout_s * 1000)}",
            "application_name": "pricecast-doctor",
        },
    }
    options.update(overrides)
    return sa.create_engine(settings.database_url, **options)


def database_label(url: str) -> str:
    """``host:port/db`` of a database URL; never the password."""
    parsed = make_url(url)
    return f"{parsed.host or 'localhost'}:{parsed.port or 5432}/{parsed.database or ''}"


def redis_label(url: str) -> str:
    from urllib.parse import urlparse

    parsed = urlparse(url)
    return f"{parsed.hostname or 'localhost'}:{parsed.port or 6379}{parsed.path or ''}"


def describe(exc: BaseException) -> str:
    """The first line of an error, typed; bounded in length (driver errors unwrapped)."""
    orig = getattr(exc, "orig", None)
    if isinstance(orig, BaseException):
        exc = orig
    text = str(exc).strip()
    first = text.splitlines()[0].strip() if text else ""
    return f"{type(exc).__name__}: {first}"[:300] if first else type(exc).__name__


def probe_reachable(
    name: str,
    label: str,
    answer: Callable[[], tuple[str, dict[str, Any]]],
    fix: Callable[[str, str], str],
) -> Finding:
    """A ``*.reachable`` check: ``answer`` talks to the server and returns the evidence and
    data of an ok finding; an error it raises is the failing finding's evidence, and ``fix``
    turns it (and the server's label) into the advice."""
    try:
        evidence, data = answer()
    except Exception as exc:  # noqa: BLE001 - the error is the evidence
        error = describe(exc)
        return Finding(name, "fail", f"{label}: {error}", fix(error, label))
    return Finding(name, "ok", evidence, data=data)
