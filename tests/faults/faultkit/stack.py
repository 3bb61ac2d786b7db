"""The three services as separate processes (what each Kubernetes Deployment runs), and
their health endpoints."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from services.common import infra


@dataclass
class Service:
    name: str
    argv: list[str]
    port: int  # health (workers) or API port
    env: dict[str, str]
    log_dir: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    exits: list[int] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        out = open(self.log_dir / f"{self.name}.log", "ab")  # noqa: SIM115 - the child owns it
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "services.cli", *self.argv],
            env=self.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=infra._die_with_parent,
        )
        out.close()
        self.starts += 1

    def signal(self, sig: signal.Signals, wait_s: float = 40.0) -> int | None:
        """Send ``sig`` and wait for the exit; returns the exit code (None: still running)."""
        assert self.proc is not None
        self.proc.send_signal(sig)
        try:
            code = self.proc.wait(wait_s)
        except subprocess.TimeoutExpired:
            return None
        self.exits.append(code)
        return code

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.alive and self.proc is not None else None

    def stop(self) -> None:
        if self.proc is not None:
            infra.stop_process(self.proc, 20)

    def rss_mb(self) -> float | None:
        if not self.alive:
            return None
        assert self.proc is not None
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
        except OSError:
            return None
        return None

    def log_tail(self, lines: int = 40) -> str:
        path = self.log_dir / f"{self.name}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def get(self, path: str, timeout: float = 3.0, **kw: Any) -> httpx.Response | None:
        try:
            return httpx.get(self.base + path, timeout=timeout, **kw)
        except httpx.HTTPError:
            return None

    def status(self, path: str) -> int | None:
        r = self.get(path)
        return None if r is None else r.status_code

    def ready(self) -> bool:
        return self.status("/health/ready") == 200


def wait_until(predicate: Any, timeout_s: float, interval_s: float = 0.25) -> float | None:
    """Seconds until ``predicate()`` held, or None after ``timeout_s``."""
    start = time.monotonic()
    while True:
        if predicate():
            return time.monotonic() - start
        if time.monotonic() - start > timeout_s:
            return None
        time.sleep(interval_s)
