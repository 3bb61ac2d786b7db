"""Each service as a container runs it: PID 1 of its own PID namespace (``unshare``), stopped
with SIGTERM. PID 1 gets no default signal actions, so only a service that handles SIGTERM
itself stops at all; each must stop in order (its worker pool too) and print no error."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from service_process import wait_serving

from services.api.core.keys import ensure_dev_keys
from services.common import infra
from services.common.config import Settings

ERROR_LINE = re.compile(r'(^|\s)(ERROR|CRITICAL)\s|"level": "(ERROR|CRITICAL)"|Traceback')


def _pid1(unshare_pid: int) -> int:
    """The service: the only child of ``unshare --fork``, PID 1 inside the namespace."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        children = Path(f"/proc/{unshare_pid}/task/{unshare_pid}/children").read_text().split()
        if children:
            return int(children[0])
        time.sleep(0.05)
    raise AssertionError("unshare started no child")


@pytest.mark.parametrize(
    ("service", "port_setting"),
    [
        ("api", "PRICECAST_API_PORT"),
        ("ingest", "PRICECAST_INGEST_HEALTH_PORT"),
        ("predict", "PRICECAST_PREDICT_HEALTH_PORT"),
    ],
)
async def test_service_as_pid_1_stops_cleanly_on_sigterm(
    service: str,
    port_setting: str,
    isolated_settings: Settings,
    clean_db: object,
    tmp_path: Path,
) -> None:
    private, public = ensure_dev_keys(tmp_path)
    port = infra.free_port()
    env = infra.export_env(isolated_settings)
    env.update(
        {
            port_setting: str(port),
            "PRICECAST_TOPIC_PRICES": isolated_settings.topic_prices,
            "PRICECAST_TOPIC_PRICES_DLQ": isolated_settings.topic_prices_dlq,
            "PRICECAST_TOPIC_PREDICTIONS": isolated_settings.topic_predictions,
            "PRICECAST_TOPIC_MODEL_EVENTS": isolated_settings.topic_model_events,
            "PRICECAST_CONSUMER_GROUP_WRITER": isolated_settings.consumer_group_writer,
            "PRICECAST_CONSUMER_GROUP_PREDICTION": isolated_settings.consumer_group_prediction,
            "PRICECAST_JWT_PRIVATE_KEY_FILE": str(private),
            "PRICECAST_JWT_PUBLIC_KEYS_DIR": str(public),
            "PRICECAST_STATE_DIR": str(tmp_path / "state"),
            "PRICECAST_PREDICTION_PROCESSES": "2",
        }
    )
    argv = ["unshare", "--pid", "--fork", "--kill-child", sys.executable, "-m", "services.cli"]
    proc = subprocess.Popen(  # noqa: ASYNC220 - the test waits on it, nothing else runs
        [*argv, service],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        await wait_serving(port, proc, service, 120)
        service_pid = _pid1(proc.pid)
        os.kill(service_pid, signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text[-3000:]
    bad = [line for line in text.splitlines() if ERROR_LINE.search(line)]
    assert bad == [], "\n".join(bad[:20])
