"""The alert rules do what they say: ``promtool test rules`` over every unit test file in
ops/prometheus/tests/ (a glob: files added later run too), and every alert in
ops/prometheus/rules/ has a case where it fires and one where it stays silent."""

from __future__ import annotations

import subprocess
from collections import defaultdict
from pathlib import Path

import yaml
from _deploy import ROOT, tool

RULES_DIR = ROOT / "ops" / "prometheus" / "rules"
TESTS_DIR = ROOT / "ops" / "prometheus" / "tests"


def rule_files() -> list[Path]:
    return sorted(RULES_DIR.glob("*.yaml"))


def unit_test_files() -> list[Path]:
    return sorted(TESTS_DIR.glob("*.yaml"))


def test_promtool_checks_the_rule_files() -> None:
    proc = subprocess.run(
        [tool("promtool"), "check", "rules", *map(str, rule_files())],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_promtool_checks_the_compose_prometheus_config() -> None:
    """(Debian's promtool is built without Kubernetes discovery, so the k8s one is not checked
    here; tests/deploy/test_manifests.py checks its alerting target.)"""
    proc = subprocess.run(
        [tool("promtool"), "check", "config", str(ROOT / "ops" / "prometheus" / "prometheus.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_promtool_unit_tests_pass() -> None:
    files = unit_test_files()
    assert files, f"no unit tests in {TESTS_DIR}"
    proc = subprocess.run(
        [tool("promtool"), "test", "rules", *map(str, files)],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("SUCCESS") == len(files), proc.stdout


def _cases() -> dict[str, dict[str, int]]:
    """alertname -> {"firing": n, "silent": n} over every unit test file."""
    cases: dict[str, dict[str, int]] = defaultdict(lambda: {"firing": 0, "silent": 0})
    for path in unit_test_files():
        doc = yaml.safe_load(path.read_text())
        for rule_file in doc["rule_files"]:
            assert (path.parent / rule_file).resolve().is_file(), (path.name, rule_file)
        for test in doc["tests"]:
            for case in test.get("alert_rule_test", []):
                kind = "firing" if case.get("exp_alerts") else "silent"
                cases[case["alertname"]][kind] += 1
    return cases


def test_every_alert_has_a_firing_and_a_silent_case() -> None:
    alerts = {
        rule["alert"]
        for path in rule_files()
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }
    cases = _cases()
    missing = {
        name: kind
        for name in sorted(alerts)
        for kind in ("firing", "silent")
        if not cases[name][kind]
    }
    assert not missing, f"alerts without a {{firing, silent}} unit test case: {missing}"
    unknown = set(cases) - alerts
    assert not unknown, f"unit tests for alerts that do not exist: {sorted(unknown)}"
