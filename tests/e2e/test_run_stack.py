"""``pricecast run`` end to end, as a newcomer meets it (docs/architecture.md, "Command line").

Starts the whole stack as a subprocess against the machine's PostgreSQL (a fresh database) and
Redis, with no Kafka configured so the Tansu broker is started and owned by the run; waits for
the ``API:``/``TOKEN:`` lines; checks the demo symbols' answers, the first training run's LSTM
champion serving BTC-USD included; stops it as a terminal's Ctrl-C does (SIGINT to the whole
process group) and checks that nothing printed an error and no process it started is left.
"""

from __future__ import annotations

import json
import os
import re
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
import redis
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from services.common import infra
from services.common.config import DEFAULT_DATABASE_URL, DEFAULT_REDIS_URL

STARTUP_LIMIT_S = 240  # 2 minutes on an idle machine; CI shares 2 cores
ERROR_LINE = re.compile(r'(^|\s)(ERROR|CRITICAL)\s|"level": "(ERROR|CRITICAL)"|Traceback')
LSTM_LIMIT_S = 420  # history stored, the first training run, the hot reload, the re-forecast


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
    def __init__(self, proc: subprocess.Popen[str], lines: list[str], state: Path) -> None:
        self.proc = proc
        self.lines = lines
        self.state = state
        self.token_at: float | None = None  # time.monotonic() when the TOKEN: line came

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
    # The stack's cache starts empty: its db number can be the one this test run's other tests
    # use (1 + pid % 14), whose cached forecasts (an LSTM's for BTC-USD) it would serve at once.
    redis_url = f"{redis_base}/{1 + (os.getpid() + 7) % 14}"
    with redis.Redis.from_url(redis_url) as cache:
        cache.flushdb()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("KAFKA_BOOTSTRAP_SERVERS",) and not k.startswith("PRICECAST_")
    }
    env.update(
        DATABASE_URL=base.set(database=name).render_as_string(hide_password=False),
        REDIS_URL=redis_url,
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
    running = RunningStack(proc, lines, state)

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("TOKEN:"):
                running.token_at = time.monotonic()
            lines.append(line)

    threading.Thread(target=pump, daemon=True).start()
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


def _await_prediction(
    api: str, token: str, symbol: str, timeout_s: float, model: str | None = None
) -> httpx.Response:
    """The symbol's 1d h=1 prediction once it answers (and, with ``model``, is served by it)."""
    deadline = time.monotonic() + timeout_s
    while True:
        r = _get(f"{api}/api/v1/predictions/{symbol}?interval=1d&horizon=1", token)
        done = r.status_code in (200, 422) and (model is None or r.json().get("model") == model)
        if done or time.monotonic() > deadline:
            return r
        time.sleep(1)


def test_first_training_run_promotes_the_lstm_that_then_serves(stack: RunningStack) -> None:
    """Issue 22: the first training run waits for the history it published, not for an idle
    topic (which the live feed never leaves), and its promotion reaches the prediction service."""
    api = stack.wait_for("API:", STARTUP_LIMIT_S)
    token = stack.wait_for("TOKEN:", 30)
    btc = _await_prediction(api, token, "BTC-USD", LSTM_LIMIT_S, model="lstm")
    assert stack.token_at is not None
    waited = time.monotonic() - stack.token_at
    assert btc.status_code == 200, btc.text
    body = btc.json()
    assert body["model"] == "lstm", "".join(stack.lines[-40:]) + btc.text
    assert body["model_version"], body
    print(f"\nTOKEN: to the first LSTM-served BTC-USD prediction: {waited:.0f} s")
    champions = _get(f"{api}/api/v1/models/champions?interval=1d", token)
    assert champions.status_code == 200, champions.text
    assert any(c["model"] == "lstm" for c in champions.json()), champions.text

    tbill = _await_prediction(api, token, "TBILL-USD", 60)
    assert tbill.status_code == 200, tbill.text
    assert tbill.json()["model"] == "arima"
    assert tbill.json()["fallback_reason"], tbill.text
    new = _await_prediction(api, token, "NEW-USD", 60)
    assert new.status_code == 422 and new.json()["error"]["code"] == "ERR_PRED_001"


def test_run_serves_predictions(stack: RunningStack) -> None:
    api = stack.wait_for("API:", STARTUP_LIMIT_S)
    token = stack.wait_for("TOKEN:", 30)
    ui = stack.wait_for("UI:", 30)
    assert ui == f"{api}/ui/"
    page = _get(ui)
    assert page.status_code == 200 and "text/html" in page.headers["content-type"], page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
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


def test_ctrl_c_to_the_process_group_stops_cleanly(stack: RunningStack) -> None:
    """Issue 20: a terminal's Ctrl-C reaches the whole foreground process group. The runner's
    children live in groups of their own, so only the runner gets it; it stops the services
    (which stop their worker pools), then the infrastructure, and nothing reports an error."""
    stack.wait_for("TOKEN:", STARTUP_LIMIT_S)
    children = _children(stack.proc.pid)
    assert len(children) >= 4  # broker + three services (and their helpers)
    os.killpg(stack.proc.pid, signal.SIGINT)
    assert stack.proc.wait(90) == 0, "".join(stack.lines[-40:])
    time.sleep(0.5)
    alive = [pid for pid in children if _running(pid)]
    assert alive == [], f"left running: {alive}"
    output = "".join(stack.lines)
    logs = {p.name: p.read_text(errors="replace") for p in (stack.state / "logs").glob("*.log")}
    assert logs, "no service logs"
    for name, text in {"output": output, **logs}.items():
        bad = [ln for ln in text.splitlines() if ERROR_LINE.search(ln)]
        assert bad == [], f"{name}: " + "\n".join(bad[:20])
