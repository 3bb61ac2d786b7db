"""docs/troubleshooting.md covers every doctor check, each section in the same four parts."""

from __future__ import annotations

import re
from pathlib import Path

from services.doctor.checks import NAMES

DOC = Path(__file__).resolve().parents[2] / "docs" / "troubleshooting.md"


def _sections(text: str) -> dict[str, str]:
    parts = re.split(r"^## ", text, flags=re.M)[1:]
    return {p.splitlines()[0].strip(): p for p in parts}


def test_every_check_is_documented_with_symptom_diagnosis_fix_and_cause() -> None:
    text = DOC.read_text()
    for name in NAMES:
        assert f"`{name}`" in text, name
    sections = _sections(text)
    modes = [s for s in sections if not s.startswith("The local broker")]
    assert len(modes) >= 17
    for title in modes:
        body = sections[title]
        for part in ("**Symptom.**", "**Diagnosis.**", "**Fix.**", "**Root cause.**"):
            assert part in body, (title, part)
        assert "pricecast doctor --only" in body, title


def test_table_links_resolve_to_sections() -> None:
    text = DOC.read_text()
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", title.lower()).replace(" ", "-") for title in _sections(text)
    }
    for link in re.findall(r"\]\(#([a-z0-9-]+)\)", text):
        assert link in anchors, link
    assert "Tansu" in text and "replication" in text
