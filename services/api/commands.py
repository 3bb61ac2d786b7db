"""``pricecast token`` and ``pricecast clients create`` (operators)."""

from __future__ import annotations

import argparse
import re
import secrets
import sys

import sqlalchemy as sa

from services.api.core.keys import load_keyset
from services.api.core.security import (
    TokenService,
    hash_secret,
    new_client_secret,
    parse_scopes,
    unknown_scopes,
)
from services.api.queries.auth import create_client
from services.common.config import get_settings
from services.common.db import make_engine

_CLIENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{2,63}$")


def _scopes(value: str) -> frozenset[str] | None:
    scopes = parse_scopes(value)
    unknown = unknown_scopes(scopes)
    if unknown or not scopes:
        print(f"unknown or empty scopes: {' '.join(sorted(unknown)) or '(none)'}", file=sys.stderr)
        return None
    return scopes


def token_main(args: argparse.Namespace) -> int:
    """Print an access token signed with the configured private key."""
    settings = get_settings()
    scopes = _scopes(args.scopes)
    if scopes is None:
        return 2
    tokens = TokenService(load_keyset(settings), settings)
    token, _ = tokens.mint(args.subject, scopes, ttl_s=args.ttl)
    print(token)
    return 0


def clients_create_main(args: argparse.Namespace) -> int:
    """Create an API client; its secret is printed once and stored only as an argon2 hash."""
    settings = get_settings()
    scopes = _scopes(args.scopes)
    if scopes is None:
        return 2
    client_id = args.client_id or f"client-{secrets.token_hex(6)}"
    if not _CLIENT_ID.match(client_id):
        print("client id: 3-64 characters of letters, digits, '.', '_' or '-'", file=sys.stderr)
        return 2
    secret = new_client_secret()
    engine = make_engine(settings, pool_size=1)
    try:
        with engine.begin() as conn:
            create_client(conn, client_id, hash_secret(secret), sorted(scopes), args.name)
    except sa.exc.IntegrityError:
        print(f"client {client_id} already exists", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    print(f"client_id: {client_id}")
    print(f"client_secret: {secret}")
    print(f"scopes: {' '.join(sorted(scopes))}")
    return 0
