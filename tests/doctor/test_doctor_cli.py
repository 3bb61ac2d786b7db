"""``pricecast doctor`` end to end: a healthy stack passes every check, exit codes, output."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from services.api.core.keys import ensure_dev_keys, load_keyset
from services.api.core.security import TokenService
from services.common import infra
from services.common.config import Settings
from services.doctor.checks import NAMES
from services.doctor.model import Finding
from services.doctor.report import as_json, as_table
from services.doctor.shell import psql_command, redis_cli_command

Diagnose = Callable[..., dict[str, Any]]
REPO = Path(__file__).resolve().parents[2]


def _env(settings: Settings) -> dict[str, str]:
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(settings.state_dir),
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
    }
    for field in (
        "state_dir",
        "topic_prices",
        "topic_prices_dlq",
        "topic_predictions",
        "topic_model_events",
        "consumer_group_writer",
        "consumer_group_prediction",
        "kafka_partitions",
        "api_port",
        "ingest_health_port",
        "predict_health_port",
    ):
        env[f"PRICECAST_{field.upper()}"] = str(getattr(settings, field))
    return env


def _doctor(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli", "doctor", *args],
        cwd=REPO,
        env=_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
    )


def _healthy(settings: Settings, engine: Engine) -> None:
    """What a running stack leaves behind: an asset with a fresh tick, keys, a demo token."""
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO assets (symbol) VALUES ('BTC-USD')"))
        conn.execute(
            sa.text(
                "INSERT INTO price_ticks (symbol, ts, price, volume, source) "
                "VALUES ('BTC-USD', now() - interval '2 seconds', 100, 1, 'synthetic')"
            )
        )
    ensure_dev_keys(settings.state_dir)
    token, _ = TokenService(load_keyset(settings), settings).mint("demo", {"predictions:read"})
    (settings.state_dir / "demo-token").write_text(token + "\n")


def test_healthy_stack_passes_every_check(doctor_settings: Settings, clean_db: Engine) -> None:
    _healthy(doctor_settings, clean_db)
    result = _doctor(doctor_settings, "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    body = json.loads(result.stdout)
    statuses = {c["name"]: c["status"] for c in body["checks"]}
    assert list(statuses) == list(NAMES)
    assert set(statuses.values()) == {"ok"}, [c for c in body["checks"] if c["status"] != "ok"]
    assert body["status"] == "ok" and body["summary"]["ok"] == len(NAMES)
    assert all(c["evidence"] for c in body["checks"])


def test_a_failure_exits_non_zero_with_the_fix_in_the_table(
    doctor_settings: Settings, clean_db: Engine
) -> None:
    _healthy(doctor_settings, clean_db)
    down = doctor_settings.model_copy(
        update={"redis_url": f"redis://127.0.0.1:{infra.free_port()}/0"}
    )
    result = _doctor(down, "--only", "redis,postgres.reachable")
    assert result.returncode == 1, result.stdout
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["STATUS", "CHECK", "EVIDENCE", "/", "FIX"]
    assert any(line.startswith("FAIL   redis.reachable") for line in lines)
    assert any("fix: nothing listens on 127.0.0.1" in line for line in lines)
    assert any(line.startswith("skip   redis.hit_rate") for line in lines)
    assert lines[-1] == "overall: fail (1 ok, 1 fail, 2 skip)"


def test_unknown_check_is_a_usage_error(doctor_settings: Settings) -> None:
    result = _doctor(doctor_settings, "--only", "nope")
    assert result.returncode == 2 and "unknown check(s): nope" in result.stderr


def test_show_topics_and_lag(doctor_settings: Settings) -> None:
    topics = _doctor(doctor_settings, "--show", "topics")
    assert topics.returncode == 0, topics.stderr
    assert doctor_settings.topic_prices in topics.stdout and "PARTITIONS" in topics.stdout
    lag = _doctor(doctor_settings, "--show", "lag")
    assert lag.returncode == 0, lag.stderr
    assert doctor_settings.consumer_group_writer in lag.stdout and "COMMITTED" in lag.stdout


def test_shell_commands_keep_passwords_off_the_command_line(settings: Settings) -> None:
    secret = settings.model_copy(
        update={
            "database_url": "postgresql+psycopg2://app:s3cret@db.example:6543/prices",
            "redis_url": "redis://:r3d1s@cache.example:6380/2",
        }
    )
    argv, env = psql_command(secret)
    assert argv == ["psql", "-h", "db.example", "-p", "6543", "-U", "app", "-d", "prices"]
    assert env["PGPASSWORD"] == "s3cret"
    argv, env = redis_cli_command(secret)
    assert argv == ["redis-cli", "-h", "cache.example", "-p", "6380", "-n", "2"]
    assert env["REDISCLI_AUTH"] == "r3d1s"
    assert "s3cret" not in " ".join(argv)


def test_renderers_wrap_and_summarise() -> None:
    findings = [
        Finding("a.check", "ok", "fine"),
        Finding("b.check", "warn", "word " * 60, "do " * 40, {"n": 1}),
    ]
    table = as_table(findings, width=80)
    assert all(len(line) <= 80 for line in table.splitlines())
    assert "fix: do do" in table and table.endswith("overall: warn (1 ok, 1 warn)")
    body = json.loads(as_json(findings))
    assert body["status"] == "warn" and body["checks"][1]["data"] == {"n": 1}
