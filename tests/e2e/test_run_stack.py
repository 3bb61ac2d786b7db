"""``pricecast run`` end to end, as a newcomer meets it (issue 2, design.md).

Starts the whole stack as a subprocess against the machine's PostgreSQL (a fresh database) and
Redis, with no Kafka configured so the Tansu broker is started and owned by the run; waits for
the ``API:``/``TOKEN:`` lines; checks the demo symbols' answers; stops it with SIGINT and checks
that no process it started is left.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from services.common import infra
from services.common.config import DEFAULT_DATABASE_URL, DEFAULT_REDIS_URL

STARTUP_LIMIT_S = 240  # the issue asks for 2 minutes on an idle machine; CI shares 2 cores


def _children(pid: int) -> set[int]:
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True)
    parents: dict[int, list[int]] = {}
    for line in out.stdout.splitlines():
        child, parent = (int(x) for x in line.split())
        parents.setdefault(parent, []).append(child)
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited


class RunningStack:
    def __init__(self, proc: subprocess.Popen[str], lines: list[str]) -> None:
        self.proc = proc
        self.lines = lines

    def wait_for(self, prefix: str, timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if line.startswith(prefix):
                    return line[len(prefix) :].strip()
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        raise AssertionError(f"no {prefix!r} line; output:\n" + "".join(self.lines[-80:]))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    base = make_url(os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL))
    name = f"pricecast_e2e_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(base.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    state = Path(tmp_path_factory.mktemp("run-state"))
    redis_base = os.environ.get("REDIS_URL", DEFAULT_REDIS_URL).rsplit("/", 1)[0]
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("KAFKA_BOOTSTRAP_SERVERS",) and not k.startswith("PRICECAST_")
    }
    env.update(
        DATABASE_URL=base.set(database=name).render_as_string(hide_password=False),
        REDIS_URL=f"{redis_base}/{1 + (os.getpid() + 7) % 15}",
        PRICECAST_STATE_DIR=str(state),
        PRICECAST_API_PORT=str(infra.free_port()),
        PRICECAST_INGEST_HEALTH_PORT=str(infra.free_port()),
        PRICECAST_PREDICT_HEALTH_PORT=str(infra.free_port()),
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "run"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)

    threading.Thread(target=pump, daemon=True).start()
    running = RunningStack(proc, lines)
    try:
        yield running
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _get(url: str, token: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.get(url, headers=headers, timeout=10)


def _await_prediction(api: str, token: str, symbol: str, timeout_s: float) -> httpx.Response:
    deadline = time.monotonic() + timeout_s
    while True:
        r = _get(f"{api}/api/v1/predictions/{symbol}?interval=1d&horizon=1", token)
        if r.status_code in (200, 422) or time.monotonic() > deadline:
            return r
        time.sleep(1)


def test_run_serves_predictions_and_stops_cleanly(stack: RunningStack) -> None:
    api = stack.wait_for("API:", STARTUP_LIMIT_S)
    token = stack.wait_for("TOKEN:", 30)
    assert token.count(".") == 2

    eth = _await_prediction(api, token, "ETH-USD", 120)
    assert eth.status_code == 200, eth.text
    body = eth.json()
    assert body["symbol"] == "ETH-USD"
    assert body["model"] in ("arima", "naive", "lstm")
    assert body["lower_bound"] <= body["predicted_price"] <= body["upper_bound"]
    assert body["horizon"] == 1 and body["interval"] == "1d"
    assert eth.headers.get("Cache-Control") == "no-store"
    assert [b["level"] for b in body["intervals"]] == [0.5, 0.8, 0.95]
    assert body["confidence_level"] == 0.8 and isinstance(body["stale"], bool)
    wide = _get(f"{api}/api/v1/predictions/ETH-USD?interval=1d&horizon=1&level=0.95", token)
    assert wide.status_code == 200, wide.text
    band = wide.json()
    assert band["confidence_level"] == 0.95
    assert band["lower_bound"] <= body["lower_bound"] and band["upper_bound"] >= body["upper_bound"]
    not_offered = _get(f"{api}/api/v1/predictions/ETH-USD?interval=1d&horizon=1&level=0.9", token)
    assert not_offered.status_code == 422
    assert not_offered.json()["error"]["code"] == "ERR_VAL_001"

    new = _await_prediction(api, token, "NEW-USD", 60)
    assert new.status_code == 422, new.text
    err = new.json()["error"]
    assert err["code"] == "ERR_PRED_001"
    assert "Required: 30 days" in err["message"] and "Available: 10 days" in err["message"]

    anonymous = _get(f"{api}/api/v1/predictions/ETH-USD?interval=1d&horizon=1")
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["code"] == "ERR_AUTH_001"

    detailed = _get(f"{api}/health/detailed").json()
    assert detailed["services"] == {
        "database": "healthy",
        "redis": "healthy",
        "kafka": "healthy",
    }, json.dumps(detailed)

    children = _children(stack.proc.pid)
    assert len(children) >= 4  # broker + three services (and their helpers)
    stack.proc.send_signal(signal.SIGINT)
    assert stack.proc.wait(60) == 0, "".join(stack.lines[-40:])
    time.sleep(0.5)
    alive = [pid for pid in children if _running(pid)]
    assert alive == [], f"left running: {alive}"
