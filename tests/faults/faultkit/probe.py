"""Background probes: the API's predictions (what clients see during a fault) and every
service's ``/health`` and ``/health/ready``, sampled with their monotonic times."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx

from faultkit.stack import Service


@dataclass(frozen=True)
class ApiSample:
    at: float
    status: int  # 0: no HTTP answer (connection refused, timeout)
    source: str  # "cache" (X-Cache header absent: unknown), kept for the report


@dataclass(frozen=True)
class HealthSample:
    at: float
    service: str
    live: int  # /health status, 0 = no answer
    ready: int  # /health/ready status, 0 = no answer


@dataclass(eq=False)
class Probe:
    """Samples the API (``api_rate`` requests/s) and every service's health while it runs."""

    api: Service
    services: list[Service]
    token: str
    symbols: list[str]
    api_rate: float = 5.0
    api_samples: list[ApiSample] = field(default_factory=list, init=False)
    health_samples: list[HealthSample] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._api_loop, daemon=True, name="probe-api"),
            threading.Thread(target=self._health_loop, daemon=True, name="probe-health"),
        ]

    def start(self) -> Probe:
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(10)

    def _api_loop(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        i = 0
        with httpx.Client(timeout=5.0, headers=headers) as client:
            while not self._stop.is_set():
                symbol = self.symbols[i % len(self.symbols)]
                i += 1
                url = f"{self.api.base}/api/v1/predictions/{symbol}?interval=1h&horizon=1"
                try:
                    status = client.get(url).status_code
                except httpx.HTTPError:
                    status = 0
                self.api_samples.append(ApiSample(time.monotonic(), status, ""))
                self._stop.wait(1.0 / self.api_rate)

    def _health_loop(self) -> None:
        with httpx.Client(timeout=3.0) as client:
            while not self._stop.is_set():
                for svc in self.services:
                    live = _status(client, svc.base + "/health")
                    ready = _status(client, svc.base + "/health/ready")
                    self.health_samples.append(
                        HealthSample(time.monotonic(), svc.name, live, ready)
                    )
                self._stop.wait(1.0)

    # --- windows -------------------------------------------------------------------------------
    def api_answers(self, start: float, end: float) -> dict[str, int]:
        counts = Counter(str(s.status) for s in self.api_samples if start <= s.at <= end)
        return dict(sorted(counts.items()))

    def health_in(self, start: float, end: float, service: str) -> list[HealthSample]:
        return [s for s in self.health_samples if s.service == service and start <= s.at <= end]


def _status(client: httpx.Client, url: str) -> int:
    try:
        return client.get(url).status_code
    except httpx.HTTPError:
        return 0
