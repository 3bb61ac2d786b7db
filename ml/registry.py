"""Model registry on the ``model_versions`` table (alembic/versions/0001_core.py).

Artifacts are stored in the row as bytes with a sha256 checksum verified on every load, so
no shared volume is needed in Kubernetes. Lifecycle: ``candidate`` -> ``champion`` (at most
one per model/scope/interval, enforced by a partial unique index) -> ``retired``; a candidate
that fails validation, or a champion an operator rolls back, becomes ``rejected``.

Every function takes a SQLAlchemy ``Connection`` and runs inside the caller's transaction.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from ml.base import Forecaster
from ml.errors import PricecastError
from ml.factory import load_forecaster
from ml.serving import LoadedModel

GLOBAL_SCOPE = "*"
_COLS = (
    "id, model, scope, interval, version, status, metrics, params, checksum, "
    "data_start, data_end, created_at, promoted_at, retired_at"
)


class RegistryError(PricecastError, RuntimeError):
    """The model registry cannot store, find or load a version."""


class ChecksumMismatch(RegistryError):
    """The stored artifact does not match its checksum (corruption or tampering)."""


@dataclass(frozen=True)
class ModelVersion:
    id: int
    model: str
    scope: str
    interval: str
    version: int
    status: str
    metrics: dict[str, Any]
    params: dict[str, Any]
    checksum: str | None
    data_start: datetime | None
    data_end: datetime | None
    created_at: datetime
    promoted_at: datetime | None
    retired_at: datetime | None

    @property
    def label(self) -> str:
        """The version string served with predictions, e.g. ``lstm:*:1d:v3``."""
        return f"{self.model}:{self.scope}:{self.interval}:v{self.version}"

    @property
    def mase(self) -> float | None:
        value = self.metrics.get("mase")
        return float(value) if value is not None else None

    def series_mase(self, symbol: str) -> float | None:
        return self._series_metric(symbol, "mase")

    def series_advantage_t(self, symbol: str) -> float | None:
        """The t of this version's holdout advantage over naive on ``symbol``, when recorded
        (``ml.promotion.Scored``); the serving noise rule reads it."""
        return self._series_metric(symbol, "advantage_t")

    def _series_metric(self, symbol: str, name: str) -> float | None:
        per = self.metrics.get("per_series", {}).get(symbol)
        value = per.get(name) if isinstance(per, dict) else None
        return float(value) if value is not None else None


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _row(row: sa.Row[Any]) -> ModelVersion:
    mapping = row._mapping
    return ModelVersion(**{name: mapping[name] for name in ModelVersion.__dataclass_fields__})


def _one(conn: sa.Connection, where: str, params: dict[str, Any]) -> ModelVersion | None:
    row = conn.execute(sa.text(f"SELECT {_COLS} FROM model_versions WHERE {where}"), params).first()
    return _row(row) if row is not None else None


def register_candidate(
    conn: sa.Connection,
    *,
    model: str,
    scope: str,
    interval: str,
    artifact: bytes,
    metrics: dict[str, Any],
    params: dict[str, Any] | None = None,
    data_start: datetime | None = None,
    data_end: datetime | None = None,
) -> ModelVersion:
    """Insert the next version of (model, scope, interval) as a candidate."""
    key = f"model_versions:{model}:{scope}:{interval}"
    conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:lock_key))"), {"lock_key": key})
    row = conn.execute(
        sa.text(
            f"""
            INSERT INTO model_versions (model, scope, interval, version, status, data_start,
                data_end, metrics, params, artifact, checksum)
            SELECT :model, :scope, :interval, coalesce(max(version), 0) + 1, 'candidate',
                :data_start, :data_end, CAST(:metrics AS jsonb), CAST(:params AS jsonb),
                :artifact, :checksum
            FROM model_versions WHERE model = :model AND scope = :scope AND interval = :interval
            RETURNING {_COLS}
            """
        ),
        {
            "model": model,
            "scope": scope,
            "interval": interval,
            "data_start": data_start,
            "data_end": data_end,
            "metrics": json.dumps(metrics),
            "params": json.dumps(params or {}),
            "artifact": artifact,
            "checksum": sha256(artifact),
        },
    ).one()
    return _row(row)


def get_version(conn: sa.Connection, version_id: int) -> ModelVersion | None:
    return _one(conn, "id = :id", {"id": version_id})


def get_champion(conn: sa.Connection, model: str, scope: str, interval: str) -> ModelVersion | None:
    return _one(
        conn,
        "model = :model AND scope = :scope AND interval = :interval AND status = 'champion'",
        {"model": model, "scope": scope, "interval": interval},
    )


def list_versions(conn: sa.Connection, model: str, scope: str, interval: str) -> list[ModelVersion]:
    rows = conn.execute(
        sa.text(
            f"SELECT {_COLS} FROM model_versions WHERE model = :model AND scope = :scope "
            "AND interval = :interval ORDER BY version"
        ),
        {"model": model, "scope": scope, "interval": interval},
    )
    return [_row(row) for row in rows]


def load_artifact(conn: sa.Connection, version_id: int) -> bytes:
    """The artifact bytes, after checking them against the stored sha256."""
    row = conn.execute(
        sa.text("SELECT artifact, checksum FROM model_versions WHERE id = :id"),
        {"id": version_id},
    ).first()
    if row is None or row.artifact is None:
        raise RegistryError(f"model version {version_id} has no artifact")
    data = bytes(row.artifact)
    if sha256(data) != row.checksum:
        raise ChecksumMismatch(f"model version {version_id}: artifact checksum mismatch")
    return data


def load_model(conn: sa.Connection, version: ModelVersion) -> Forecaster:
    return load_forecaster(version.model, load_artifact(conn, version.id))


def load_champion(
    conn: sa.Connection, model: str, scope: str, interval: str
) -> tuple[LoadedModel, dict[str, Any]] | None:
    """The champion of (model, scope, interval) loaded, with its row metadata; None if none.

    The metadata has ``id``, ``version``, ``label``, ``promoted_at``, ``data_end`` and
    ``metrics`` (for a global model ``metrics["per_series"][symbol]["mase"]``).
    """
    champ = get_champion(conn, model, scope, interval)
    if champ is None:
        return None
    meta: dict[str, Any] = {
        "id": champ.id,
        "version": champ.version,
        "label": champ.label,
        "promoted_at": champ.promoted_at,
        "data_end": champ.data_end,
        "metrics": champ.metrics,
    }
    return LoadedModel(load_model(conn, champ), champ.label, champ.mase), meta


def load_champion_for(
    conn: sa.Connection, symbol: str, interval: str, model: str = "lstm"
) -> LoadedModel | None:
    """The champion serving ``symbol``: its own, else the global (``*``) one; None if neither.

    ``validation_mase`` is the champion's walk-forward MASE on this symbol when recorded.
    """
    for scope in (symbol, GLOBAL_SCOPE):
        champ = get_champion(conn, model, scope, interval)
        if champ is not None:
            mase = champ.series_mase(symbol)
            if mase is None and scope == symbol:
                mase = champ.mase
            advantage_t = champ.series_advantage_t(symbol)
            return LoadedModel(load_model(conn, champ), champ.label, mase, advantage_t)
    return None


def promote(conn: sa.Connection, version_id: int) -> ModelVersion:
    """Make ``version_id`` the champion; the current champion (if any) is retired."""
    cand = get_version(conn, version_id)
    if cand is None:
        raise RegistryError(f"no model version {version_id}")
    if cand.status not in ("candidate", "retired"):
        raise RegistryError(f"cannot promote a {cand.status} version")
    params = {"model": cand.model, "scope": cand.scope, "interval": cand.interval}
    conn.execute(
        sa.text(
            "UPDATE model_versions SET status = 'retired', retired_at = now() "
            "WHERE model = :model AND scope = :scope AND interval = :interval "
            "AND status = 'champion'"
        ),
        params,
    )
    conn.execute(
        sa.text(
            "UPDATE model_versions SET status = 'champion', promoted_at = now(), "
            "retired_at = NULL WHERE id = :id"
        ),
        {"id": version_id},
    )
    promoted = get_version(conn, version_id)
    assert promoted is not None
    return promoted


def reject(conn: sa.Connection, version_id: int, reason: str) -> None:
    conn.execute(
        sa.text(
            "UPDATE model_versions SET status = 'rejected', "
            "metrics = metrics || jsonb_build_object('rejected_reason', CAST(:reason AS text)) "
            "WHERE id = :id"
        ),
        {"id": version_id, "reason": reason},
    )


def rollback(conn: sa.Connection, model: str, scope: str, interval: str) -> ModelVersion:
    """Reject the current champion and restore the most recently retired former champion."""
    current = get_champion(conn, model, scope, interval)
    if current is None:
        raise RegistryError(f"no champion for {model}/{scope}/{interval}")
    previous = _one(
        conn,
        "model = :model AND scope = :scope AND interval = :interval AND status = 'retired' "
        "AND promoted_at IS NOT NULL ORDER BY retired_at DESC NULLS LAST, version DESC LIMIT 1",
        {"model": model, "scope": scope, "interval": interval},
    )
    if previous is None:
        raise RegistryError(f"no previous champion to restore for {model}/{scope}/{interval}")
    reject(conn, current.id, f"rolled back to v{previous.version}")
    return promote(conn, previous.id)
