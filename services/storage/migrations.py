"""What the alembic revisions share (alembic/versions is no package, so it lives here)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType


def earlier_revision(revision_file: str, filename: str) -> ModuleType:
    """The revision ``filename``, loaded from the versions folder of ``revision_file`` (the
    calling revision's ``__file__``): later revisions reuse its statements."""
    path = Path(revision_file).with_name(filename)
    spec = importlib.util.spec_from_file_location(f"pricecast_migration_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
