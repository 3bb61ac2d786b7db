"""The locked dependency set (requirements/*.txt): what `make install` installs, exactly.

``requirements/runtime.txt`` (the image) and ``requirements/dev.txt`` (``make install``,
``.ci/run``) are pip-compile output with hashes; torch 2.13.0 (CPU build) is installed on its
own before them (requirements/README.md says why).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
REQ = ROOT / "requirements"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)")
# Installed beside the lock on purpose: the project itself, and torch (its own step).
OUTSIDE_THE_LOCK = {"pricecast", "torch"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(path: Path) -> dict[str, str]:
    found = {}
    for line in path.read_text().splitlines():
        if m := PIN.match(line):
            found[_norm(m.group(1))] = m.group(2)
    return found


def test_every_pin_carries_hashes() -> None:
    for name in ("runtime.txt", "dev.txt"):
        text = (REQ / name).read_text()
        blocks = re.split(r"\n(?=[A-Za-z0-9])", text)
        for block in blocks:
            if PIN.match(block):
                assert "--hash=sha256:" in block, f"{name}: {block.splitlines()[0]}"


def test_runtime_set_is_the_dev_sets_runtime_part() -> None:
    runtime, dev = pins(REQ / "runtime.txt"), pins(REQ / "dev.txt")
    assert runtime, "empty runtime lock"
    assert {k: dev.get(k) for k in runtime} == runtime


def test_installed_set_is_exactly_the_lock() -> None:
    locked = pins(REQ / "dev.txt")
    installed = {_norm(d.metadata["Name"]): d.version for d in metadata.distributions()}
    wrong = {k: (v, installed.get(k)) for k, v in locked.items() if installed.get(k) != v}
    assert wrong == {}, f"locked vs installed: {wrong}"
    extra = set(installed) - set(locked) - OUTSIDE_THE_LOCK
    assert extra == set(), f"installed but not locked: {sorted(extra)}"
    assert installed["torch"].startswith("2.13.0"), installed["torch"]
    assert "+cu" not in installed["torch"]


@pytest.mark.slow
def test_make_lock_reproduces_the_lock(tmp_path: Path) -> None:
    """`make lock` on a copy of the project gives the committed files back (pins kept)."""
    for name in ("Makefile", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(REQ, tmp_path / "requirements")
    (tmp_path / ".venv").symlink_to(ROOT / ".venv")
    out = subprocess.run(
        ["make", "-o", ".venv/.installed", "lock"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    for name in ("runtime.txt", "dev.txt"):
        assert (tmp_path / "requirements" / name).read_text() == (REQ / name).read_text(), name
