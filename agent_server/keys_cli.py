"""``citadel keys create NAME --scope S...``, ``citadel keys list``, ``citadel keys revoke ID``:
project API keys from the command line.

They open the configured database as ``citadel db`` does (the embedded server under the data
directory when ``DATABASE_URL`` is unset) and migrate it first, so a fresh install can have
keys before the server first starts. ``create`` prints the secret alone on stdout, so a
script can capture it; everything else goes to stderr.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime

from agent_server.db_cli import one_connection
from agent_server.scopes import parse_scopes
from agent_server.store.api_keys import ApiKey, ApiKeyStore, check_name
from agent_server.store.base import Actor, StorageUnavailable
from agent_server.store.embedded import DatabaseSettings
from agent_server.store.migrations import MigrationError, upgrade
from agent_server.store.postgres_api_keys import PostgresApiKeyStore

ACTOR = Actor("cli")


async def run_keys_command(args: argparse.Namespace, settings: DatabaseSettings) -> int:
    """``args.action`` with its arguments; the exit status: 0 done, 1 failed, 2 bad input."""
    if args.action == "create":
        try:  # before the database is opened: a typo should not cost a server start
            check_name(args.name)
            parse_scopes(args.scopes)
        except ValueError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
    try:
        async with one_connection(settings) as pool:
            await upgrade(pool)
            keys = PostgresApiKeyStore(pool)
            if args.action == "create":
                return await _create(keys, args.name, args.scopes)
            if args.action == "list":
                return await _list(keys)
            return await _revoke(keys, args.id)
    except (StorageUnavailable, MigrationError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


async def _create(keys: ApiKeyStore, name: str, scopes: list[str]) -> int:
    key, secret = await keys.create(name, scopes, ACTOR)
    print(f"created {key.id} ({key.name}) with scopes {', '.join(key.scopes)}", file=sys.stderr)
    print(secret)
    print(
        "this secret will not be shown again: store it now, and send it as"
        " 'Authorization: Bearer <secret>'",
        file=sys.stderr,
    )
    return 0


async def _list(keys: ApiKeyStore) -> int:
    rows = [("id", "name", "scopes", "created", "last used", "revoked")]
    rows += [_row(key) for key in await keys.list()]
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [f"{cell:<{width}}" for cell, width in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[-1]]))
    return 0


def _row(key: ApiKey) -> tuple[str, str, str, str, str, str]:
    return (
        key.id,
        key.name,
        ",".join(key.scopes),
        _when(key.created_at),
        _when(key.last_used_at, "never"),
        _when(key.revoked_at, "-"),
    )


def _when(at: datetime | None, absent: str = "") -> str:
    return absent if at is None else at.isoformat(" ", "seconds")


async def _revoke(keys: ApiKeyStore, key_id: str) -> int:
    if not await keys.revoke(key_id, ACTOR):
        print(f"error: there is no key {key_id}, or it is revoked already", file=sys.stderr)
        return 1
    print(f"revoked {key_id}: its secret is refused from now on")
    return 0
