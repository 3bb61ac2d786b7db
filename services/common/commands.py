"""Small CLI commands that belong to no single service."""

from __future__ import annotations

import argparse

from services.common.config import get_settings
from services.common.db import migrate


def migrate_main(args: argparse.Namespace) -> int:
    settings = get_settings()
    migrate(settings.database_url, args.revision)
    print(f"database migrated to {args.revision}")
    return 0
