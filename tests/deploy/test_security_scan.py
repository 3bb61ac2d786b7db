"""checkov scans the rendered manifests of every overlay and the Dockerfile: no failed check,
and every skipped check carries its justification in place."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from _deploy import OVERLAYS, ROOT, render_text, tool


def run_checkov(files: list[Path], frameworks: list[str]) -> list[dict[str, Any]]:
    cmd = [tool("checkov"), "--output", "json", "--skip-download", "--compact"]
    for f in files:
        cmd += ["-f", str(f)]
    cmd += ["--framework", *frameworks]
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"}
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env, cwd=ROOT)
    assert proc.stdout.strip(), f"checkov printed nothing:\n{proc.stderr[-3000:]}"
    reports = json.loads(proc.stdout)
    return reports if isinstance(reports, list) else [reports]


def test_manifests_and_dockerfile_pass_checkov(tmp_path: Path) -> None:
    files = []
    for name in OVERLAYS:
        path = tmp_path / f"{name}.yaml"
        path.write_text(render_text(f"overlays/{name}"))
        files.append(path)
    reports = run_checkov([*files, ROOT / "docker" / "Dockerfile"], ["kubernetes", "dockerfile"])
    by_type = {r["check_type"]: r for r in reports}
    assert set(by_type) == {"kubernetes", "dockerfile"}, list(by_type)
    for check_type, report in by_type.items():
        failed = report["results"]["failed_checks"]
        lines = [f"{f['check_id']} {f['resource']}: {f['check_name']}" for f in failed]
        assert not failed, f"{check_type}:\n" + "\n".join(lines)
        assert report["summary"]["passed"] > 50, check_type
        for skip in report["results"]["skipped_checks"]:
            why = skip["check_result"].get("suppress_comment", "")
            assert len(why) > 40, f"{skip['check_id']} on {skip['resource']} lacks a justification"
