"""``pricecast doctor [--json] [--only CHECKS] [--show topics|lag] [--shell db|redis]``."""

from __future__ import annotations

import argparse
import sys

from services.common.config import Settings, get_settings
from services.doctor.model import Context, Finding
from services.doctor.report import as_json, as_table
from services.doctor.scheduler import run, select


def diagnose(settings: Settings, only: list[str] | None = None) -> list[Finding]:
    """Run the selected checks against ``settings``; the findings in report order."""
    ctx = Context(settings)
    try:
        return run(ctx, select(only))
    finally:
        ctx.close()


def main(args: argparse.Namespace) -> int:
    """Exit 0 when nothing fails (warnings included), 1 when a check fails, 2 on bad usage."""
    settings = get_settings()
    shell = getattr(args, "shell", None)
    if shell:
        from services.doctor.shell import exec_shell

        return exec_shell(settings, shell)
    show = getattr(args, "show", None)
    if show:
        return _show(settings, show)
    try:
        specs = select(getattr(args, "only", None))
    except ValueError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    ctx = Context(settings)
    try:
        findings = run(ctx, specs)
    finally:
        ctx.close()
    print(as_json(findings) if getattr(args, "json", False) else as_table(findings))
    return 1 if any(finding.status == "fail" for finding in findings) else 0


def _show(settings: Settings, what: str) -> int:
    from services.doctor.show import lag_table, topics_table

    if not settings.kafka_configured:
        print("KAFKA_BOOTSTRAP_SERVERS is not set", file=sys.stderr)
        return 1
    timeout = settings.doctor_check_timeout_s
    try:
        print(topics_table(settings, timeout) if what == "topics" else lag_table(settings, timeout))
    except Exception as exc:  # noqa: BLE001 - say why, as doctor would
        from services.doctor.model import describe

        print(f"kafka at {settings.kafka_bootstrap_servers}: {describe(exc)}", file=sys.stderr)
        return 1
    return 0
