"""Render findings: an aligned table for people, JSON for machines."""

from __future__ import annotations

import json
import shutil
import textwrap
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from services import __version__
from services.doctor.model import Finding
from services.doctor.scheduler import overall

_MARK = {"ok": "ok", "warn": "WARN", "fail": "FAIL", "skip": "skip"}


def as_json(findings: Sequence[Finding]) -> str:
    counts = Counter(finding.status for finding in findings)
    body: dict[str, Any] = {
        "status": overall(findings),
        "timestamp": datetime.now(UTC).isoformat(),
        "version": __version__,
        "summary": {status: counts.get(status, 0) for status in ("ok", "warn", "fail", "skip")},
        "checks": [finding.as_dict() for finding in findings],
    }
    return json.dumps(body, indent=2, default=str)


def as_table(findings: Sequence[Finding], width: int | None = None) -> str:
    width = width or max(80, min(160, shutil.get_terminal_size((120, 24)).columns))
    name_w = max([len(finding.name) for finding in findings] + [5])
    indent = 7 + name_w + 2
    wrap_w = max(30, width - indent)
    lines = [f"{'STATUS':<7}{'CHECK':<{name_w + 2}}EVIDENCE / FIX"]
    for finding in findings:
        body = textwrap.wrap(finding.evidence, wrap_w) or [""]
        if finding.fix and finding.status in ("warn", "fail"):
            body += textwrap.wrap(
                "fix: " + finding.fix, wrap_w, subsequent_indent="     ", break_on_hyphens=False
            )
        lines.append(f"{_MARK[finding.status]:<7}{finding.name:<{name_w + 2}}{body[0]}")
        lines += [" " * indent + rest for rest in body[1:]]
    counts = Counter(finding.status for finding in findings)
    summary = ", ".join(
        f"{counts[status]} {status}" for status in ("ok", "warn", "fail", "skip") if counts[status]
    )
    lines.append("")
    lines.append(f"overall: {overall(findings)} ({summary})")
    return "\n".join(lines)
