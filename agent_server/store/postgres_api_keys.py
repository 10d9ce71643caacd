"""Project API keys in Postgres (migration 0003); creating and revoking one is audited in the
same transaction."""

from __future__ import annotations

import builtins
from collections.abc import Sequence

import asyncpg

from agent_server.scopes import parse_scopes
from agent_server.store.api_keys import (
    LAST_USED_EVERY,
    ApiKey,
    audit_details,
    check_name,
    hash_secret,
    new_key_id,
    new_secret,
    parse_secret,
    secret_matches,
)
from agent_server.store.base import Actor
from agent_server.store.postgres import audit, db_errors

_COLUMNS = "id, name, scopes, created_by, created_at, revoked_at, last_used_at"


class PostgresApiKeyStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def create(self, name: str, scopes: Sequence[str], actor: Actor) -> tuple[ApiKey, str]:
        name, checked = check_name(name), parse_scopes(scopes)
        key_id = new_key_id()
        secret = new_secret(key_id)
        async with db_errors(), self._pool.acquire() as connection, connection.transaction():
            row = await connection.fetchrow(
                f"INSERT INTO api_keys (id, name, secret_hash, scopes, created_by)"
                f" VALUES ($1, $2, $3, $4, $5) RETURNING {_COLUMNS}",
                key_id,
                name,
                hash_secret(secret),
                list(checked),
                actor.user_id,
            )
            key = _key(row)
            await audit(connection, actor, "api_key.create", None, audit_details(key))
        return key, secret

    async def revoke(self, key_id: str, actor: Actor) -> bool:
        async with db_errors(), self._pool.acquire() as connection, connection.transaction():
            row = await connection.fetchrow(
                f"UPDATE api_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL"
                f" RETURNING {_COLUMNS}",
                key_id,
            )
            if row is None:
                return False
            await audit(connection, actor, "api_key.revoke", None, audit_details(_key(row)))
        return True

    async def verify(self, secret: str) -> ApiKey | None:
        key_id = parse_secret(secret)
        if key_id is None:
            return None
        async with db_errors():
            row = await self._pool.fetchrow(
                f"SELECT {_COLUMNS}, secret_hash, now() - last_used_at >= $2 AS stale"
                " FROM api_keys WHERE id = $1",
                key_id,
                LAST_USED_EVERY,
            )
            if row is None or not secret_matches(secret, row["secret_hash"]):
                return None
            if row["revoked_at"] is not None:
                return None
            if row["last_used_at"] is not None and not row["stale"]:
                return _key(row)
            # Another worker may have just written it: the condition keeps that write.
            used = await self._pool.fetchrow(
                f"UPDATE api_keys SET last_used_at = now() WHERE id = $1"
                f" AND (last_used_at IS NULL OR last_used_at <= now() - $2::interval)"
                f" RETURNING {_COLUMNS}",
                key_id,
                LAST_USED_EVERY,
            )
        return _key(row if used is None else used)

    async def list(self) -> builtins.list[ApiKey]:
        async with db_errors():
            rows = await self._pool.fetch(
                f"SELECT {_COLUMNS} FROM api_keys ORDER BY created_at DESC, id DESC"
            )
        return [_key(row) for row in rows]


def _key(row: asyncpg.Record) -> ApiKey:
    return ApiKey(
        id=row["id"],
        name=row["name"],
        scopes=tuple(row["scopes"]),
        created_by=row["created_by"],
        created_at=row["created_at"],
        revoked_at=row["revoked_at"],
        last_used_at=row["last_used_at"],
    )
