"""``stream.answers``: a served API answers the probe; a refusal is a failure with its close
code; no API on the port is nothing to check."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from api.stream._stream_helpers import start_api
from sqlalchemy.engine import Engine

from services.api.core.keys import ensure_dev_keys
from services.common.config import Settings

Diagnose = Callable[..., dict[str, Any]]


@pytest.fixture
def keyed(doctor_settings: Settings, tmp_path: Path) -> Settings:
    private, public = ensure_dev_keys(tmp_path / "keys")
    return doctor_settings.model_copy(
        update={"jwt_private_key_file": private, "jwt_public_keys_dir": public}
    )


async def test_stream_answers_on_a_served_api(
    keyed: Settings, clean_db: Engine, diagnose_map: Diagnose
) -> None:
    api = await start_api(keyed)
    try:
        settings = keyed.model_copy(update={"api_port": api.port})
        found = await asyncio.to_thread(diagnose_map, settings, "stream.answers")
        assert found["stream.answers"].status == "ok", found["stream.answers"]
        assert "snapshot of ticks:" in found["stream.answers"].evidence
        # The probe's token from other keys: the stream refuses it, the doctor says so.
        private, public = ensure_dev_keys(keyed.state_dir / "other-keys")
        foreign = settings.model_copy(
            update={"jwt_private_key_file": private, "jwt_public_keys_dir": public}
        )
        found = await asyncio.to_thread(diagnose_map, foreign, "stream.answers")
        assert found["stream.answers"].status == "fail"
        assert "4401" in found["stream.answers"].evidence
    finally:
        await api.stop()


def test_no_api_listening_is_nothing_to_check(keyed: Settings, diagnose_map: Diagnose) -> None:
    found = diagnose_map(keyed, "stream.answers")["stream.answers"]
    assert found.status == "ok" and "no API listens" in found.evidence
