"""``pricecast run``: the whole stack in the foreground.

1. infrastructure: reuse what answers, start what is missing (``services.common.infra``);
2. ``alembic upgrade head`` and the Kafka topics;
3. development JWT keys under ``.pricecast/keys`` unless keys are configured;
4. the three services as child processes (what each Kubernetes Deployment runs);
5. demo history through the normal ingestion path when the database is empty;
6. once the API answers: ``API: ...``, ``TOKEN: ...`` and ``UI: ...`` lines, the token also in
   ``.pricecast/demo-token``;
7. Ctrl-C or SIGTERM stops the services, then the infrastructure it started.

Every child runs in a process group of its own: a terminal sends Ctrl-C's SIGINT to its whole
foreground group, and a broker or worker pool that died at that moment beside the services
would fill the output with connection errors. Only the runner gets it, and stops the rest in
order: the services with SIGTERM (each stops its own worker pool), then the infrastructure.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import sqlalchemy as sa

from services.api.core.keys import ensure_dev_keys
from services.common import infra
from services.common.config import Settings, get_settings
from services.common.db import migrate, wait_for_db
from services.common.kafka import ensure_topics

log = logging.getLogger("pricecast.run")

DEMO_HISTORY = {"BTC-USD": 400, "ETH-USD": 120, "TBILL-USD": 45, "NEW-USD": 10}
DEMO_SCOPES = "prices:read predictions:read models:read models:write"


class Stack:
    """Child service processes, stopped together."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

        self.jobs: dict[str, subprocess.Popen[bytes]] = {}

    def _spawn(self, name: str, argv: tuple[str, ...]) -> subprocess.Popen[bytes]:
        out = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.cli", *argv],
            env=self.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=infra._die_with_parent,
            process_group=0,  # a terminal's Ctrl-C reaches the runner only (see main)
        )
        log.info("started %s (pid %d), log %s", name, proc.pid, out.name)
        return proc

    def start(self, name: str, *argv: str) -> None:
        """A long-running service: its exit stops the run."""
        self.procs[name] = self._spawn(name, argv)

    def job(self, name: str, *argv: str) -> None:
        """A one-shot job (e.g. the first training run): it may exit."""
        self.jobs[name] = self._spawn(name, argv)

    def dead(self) -> list[str]:
        return [name for name, proc in self.procs.items() if proc.poll() is not None]

    def stop(self) -> None:
        everything = [*self.procs.values(), *self.jobs.values()]
        for proc in everything:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        for proc in everything:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def database_empty(settings: Settings) -> bool:
    engine = sa.create_engine(settings.database_url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return bool(
                conn.execute(sa.text("SELECT NOT EXISTS (SELECT 1 FROM price_ticks)")).scalar()
            )
    finally:
        engine.dispose()


def wait_http(url: str, timeout_s: float, stack: Stack) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if stack.dead():
            raise RuntimeError(f"service exited early: {', '.join(stack.dead())} (see logs)")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise TimeoutError(f"{url} did not answer within {timeout_s}s")


def wait_history_stored(settings: Settings, stored: threading.Event) -> None:
    from services.ingestion.backfill import wait_until_stored

    if asyncio.run(wait_until_stored(settings, timeout_s=300)):
        stored.set()
    else:
        log.warning("demo history not stored within 300 s; skipping the first training run")


def mint_token(
    env: dict[str, str],
    subject: str = "demo",
    scopes: str = DEMO_SCOPES,
    ttl_s: int | None = 12 * 3600,
) -> str:
    """An access token minted by ``pricecast token`` with the keys ``env`` names (``ttl_s``
    None: the configured access-token TTL). Also the benchmarks' and fault tests' minting."""
    ttl = ["--ttl", str(ttl_s)] if ttl_s else []
    argv = [sys.executable, "-m", "services.cli", "token", "--subject", subject]
    out = subprocess.run(
        [*argv, "--scopes", scopes, *ttl],
        env=env,
        check=True,
        capture_output=True,
        text=True,
        process_group=0,
    )
    return out.stdout.strip().splitlines()[-1]


def main(args: argparse.Namespace) -> int:
    settings = get_settings()
    if args.port:
        settings = settings.model_copy(update={"api_port": args.port})
    state = settings.state_dir.resolve()
    log_dir = state / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())

    with infra.resolved(settings, log_dir) as found:
        settings = found.settings
        for what in found.started:
            print(f"started {what}", flush=True)
        engine = sa.create_engine(settings.database_url, poolclass=sa.pool.NullPool)
        wait_for_db(engine, settings.startup_wait_s)
        engine.dispose()
        migrate(settings.database_url)
        asyncio.run(ensure_topics(settings))

        env = infra.export_env(settings)
        if settings.jwt_private_key_file is None:
            private, public_dir = ensure_dev_keys(state)
            env["PRICECAST_JWT_PRIVATE_KEY_FILE"] = str(private)
            env["PRICECAST_JWT_PUBLIC_KEYS_DIR"] = str(public_dir)
        env["PRICECAST_API_PORT"] = str(settings.api_port)

        stack = Stack(env, log_dir)
        history_stored = threading.Event()
        try:
            stack.start("ingestion", "ingest")
            stack.start("prediction", "predict")
            stack.start("api", "api")
            if not args.no_demo and database_empty(settings):
                from services.ingestion.backfill import load_history

                print("loading demo history through the ingestion path ...", flush=True)
                published = asyncio.run(load_history(settings, DEMO_HISTORY))
                print(f"published {published} historical ticks", flush=True)
                # The first retraining run, as the nightly CronJob would do it: once the
                # history is stored it trains, validates and promotes an LSTM where it beats
                # naive; the prediction service hot-reloads it from ``model-events``.
                threading.Thread(
                    target=wait_history_stored, args=(settings, history_stored), daemon=True
                ).start()
            base = f"http://127.0.0.1:{settings.api_port}"
            wait_http(f"{base}/health", 90, stack)
            token = mint_token(env)
            (state / "demo-token").write_text(token + "\n")
            os.chmod(state / "demo-token", 0o600)
            print(f"API: {base}", flush=True)
            print(f"TOKEN: {token}", flush=True)
            print(f"UI: {base}/ui/", flush=True)
            print("Ctrl-C stops everything.", flush=True)
            while not stop.wait(1.0):
                if history_stored.is_set() and "train" not in stack.jobs:
                    # Spawned from the main thread: children die with the thread that
                    # started them (PR_SET_PDEATHSIG), and this one lives as long as the run.
                    stack.job("train", "train")
                if stack.dead():
                    print(f"service exited: {', '.join(stack.dead())}; stopping", flush=True)
                    return 1
            return 0
        finally:
            print("stopping ...", flush=True)
            stack.stop()
