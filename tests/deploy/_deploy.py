"""Shared helpers for the deployment tests: locating tools, rendering overlays, walking pods."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
OVERLAYS = ("dev", "prod")
TOOLS_BIN = ROOT / ".venv-tools" / "bin"
INSTALL_HINT = "run `make tools` (ops/tools/install-tools.sh) to install the deployment-check tools"

Manifest = dict[str, Any]
POD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob"}
PRICECAST_IMAGE = "pricecast"


def tool(name: str) -> str:
    """Path of a required tool: .venv-tools first, then PATH. Fails (never skips) when absent."""
    local = TOOLS_BIN / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if found is None:
        raise AssertionError(f"`{name}` not found: {INSTALL_HINT}")
    return found


def kubectl() -> str:
    """A kubectl whose embedded kustomize is v5 (components, labels transformer)."""
    for candidate in (TOOLS_BIN / "kubectl", shutil.which("kubectl")):
        if candidate is None or not Path(candidate).exists():
            continue
        out = subprocess.run(
            [str(candidate), "version", "--client"], capture_output=True, text=True, check=False
        ).stdout
        if "Kustomize Version: v5" in out:
            return str(candidate)
    raise AssertionError(f"no kubectl with kustomize v5 found: {INSTALL_HINT}")


@cache
def render_text(target: str) -> str:
    """``kubectl kustomize`` of k8s/<target> (``base`` or ``overlays/<name>``)."""
    proc = subprocess.run(
        [kubectl(), "kustomize", str(K8S / target)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, f"kubectl kustomize {target} failed:\n{proc.stderr}"
    return proc.stdout


def render(target: str) -> list[Manifest]:
    return [doc for doc in yaml.safe_load_all(render_text(target)) if doc]


def overlay(name: str) -> list[Manifest]:
    return render(f"overlays/{name}")


def by_kind(manifests: list[Manifest], kind: str) -> list[Manifest]:
    return [m for m in manifests if m["kind"] == kind]


def find(manifests: list[Manifest], kind: str, name: str) -> Manifest:
    for m in manifests:
        if m["kind"] == kind and m["metadata"]["name"] == name:
            return m
    raise AssertionError(f"{kind}/{name} not rendered")


def pod_spec(workload: Manifest) -> dict[str, Any]:
    spec = workload["spec"]
    if workload["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    return dict(spec["template"]["spec"])


def workloads(manifests: list[Manifest]) -> Iterator[Manifest]:
    return (m for m in manifests if m["kind"] in POD_KINDS)


def containers(workload: Manifest) -> list[dict[str, Any]]:
    spec = pod_spec(workload)
    return list(spec.get("initContainers", [])) + list(spec["containers"])


def is_pricecast(container: dict[str, Any]) -> bool:
    return str(container["image"]).split(":")[0].split("@")[0].rsplit("/", 1)[-1] == (
        PRICECAST_IMAGE
    )


def skip_annotations(manifest: Manifest) -> dict[str, str]:
    """checkov's in-place skips: ``checkov.io/skipN: CHECK_ID=justification``."""
    notes = manifest["metadata"].get("annotations", {}) or {}
    skips: dict[str, str] = {}
    for key, value in notes.items():
        if key.startswith("checkov.io/skip"):
            check, _, why = str(value).partition("=")
            skips[check] = why
    return skips
