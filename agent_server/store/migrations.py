"""Schema migrations: numbered SQL files, applied once and in order, by one worker at a time.

Migrations are the files ``migrations/NNNN_name.sql``. Each runs in its own transaction in the
schema the connection's ``search_path`` selects, and is recorded with its checksum in that
schema's ``schema_migrations`` table. Released migrations are never edited, so a changed file
is refused; so is a database holding a version this code does not know (a newer release ran).
"""

from __future__ import annotations

import hashlib
import importlib.resources
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from importlib.resources.abc import Traversable

import asyncpg

logger = logging.getLogger(__name__)

_FILE_NAME = re.compile(r"(\d{4})_(\w+)\.sql")
_LOCK_NAMESPACE = "citadel.schema_migrations:"


class MigrationError(RuntimeError):
    """Migrations cannot run against this database; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str
    checksum: str  # sha256 of the file, hex

    @property
    def label(self) -> str:
        return f"{self.version:04d}_{self.name}"


@dataclass(frozen=True, slots=True)
class MigrationStatus:
    version: int
    name: str
    applied_at: datetime | None  # None: pending
    problem: str | None = None  # why upgrade refuses to run, if it does

    @property
    def label(self) -> str:
        return f"{self.version:04d}_{self.name}"


def load_migrations(directory: Traversable | None = None) -> list[Migration]:
    """The migrations in ``directory`` (default: the packaged ones), by version."""
    if directory is None:
        directory = importlib.resources.files("agent_server.store").joinpath("migrations")
    found: dict[int, Migration] = {}
    for file in directory.iterdir():
        if not file.name.endswith(".sql"):
            continue
        match = _FILE_NAME.fullmatch(file.name)
        if match is None:
            raise MigrationError(f"migration file {file.name} is not named NNNN_name.sql")
        content = file.read_bytes()
        migration = Migration(
            version=int(match[1]),
            name=match[2],
            sql=content.decode(),
            checksum=hashlib.sha256(content).hexdigest(),
        )
        if migration.version in found:
            other = found[migration.version]
            raise MigrationError(f"{other.label} and {migration.label} share a version")
        found[migration.version] = migration
    return [found[version] for version in sorted(found)]


async def upgrade(
    pool: asyncpg.Pool, migrations: Sequence[Migration] | None = None
) -> list[Migration]:
    """Apply the pending migrations; returns those this call applied.

    Workers starting together are safe: a session advisory lock (per schema) lets one apply
    while the others wait, then find nothing left to do.
    """
    known = (
        load_migrations()
        if migrations is None
        else sorted(migrations, key=lambda item: item.version)
    )
    applied: list[Migration] = []
    # Releasing the connection to the pool resets its settings and advisory locks (asyncpg's
    # reset query), so neither outlives this block, even when it fails half-way.
    async with pool.acquire() as connection:
        # Waiting for another worker, and a migration itself, may outlast any query's timeout.
        await connection.execute("SET statement_timeout = 0")
        schema = await _current_schema(connection)
        await connection.execute(
            "SELECT pg_advisory_lock(hashtextextended($1, 0))", _LOCK_NAMESPACE + schema
        )
        table = f"{schema}.schema_migrations"
        await connection.execute(
            f"CREATE TABLE IF NOT EXISTS {table} ("
            " version integer PRIMARY KEY,"
            " name text NOT NULL,"
            " checksum text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        statuses = _statuses(known, await _recorded(connection, table))
        refused = [status.problem for status in statuses if status.problem]
        if refused:
            raise MigrationError("; ".join(refused))
        pending = {status.version for status in statuses if status.applied_at is None}
        for migration in known:
            if migration.version not in pending:
                continue
            async with connection.transaction():
                await connection.execute(migration.sql)
                await connection.execute(
                    f"INSERT INTO {table} (version, name, checksum) VALUES ($1, $2, $3)",
                    migration.version,
                    migration.name,
                    migration.checksum,
                )
            logger.info("applied migration %s in schema %s", migration.label, schema)
            applied.append(migration)
    return applied


async def status(
    pool: asyncpg.Pool, migrations: Sequence[Migration] | None = None
) -> list[MigrationStatus]:
    """Every known migration and every recorded one, by version, without changing anything."""
    known = (
        load_migrations()
        if migrations is None
        else sorted(migrations, key=lambda item: item.version)
    )
    async with pool.acquire() as connection:
        schema = await _current_schema(connection)
        table = f"{schema}.schema_migrations"
        exists = await connection.fetchval("SELECT to_regclass($1) IS NOT NULL", table)
        recorded = await _recorded(connection, table) if exists else []
    return _statuses(known, recorded)


async def _current_schema(connection: asyncpg.Connection) -> str:
    """The schema migrations go to, quoted for SQL (the first existing one on search_path)."""
    schema, search_path = await connection.fetchrow(
        "SELECT quote_ident(current_schema()), current_setting('search_path')"
    )
    if schema is None:
        raise MigrationError(f"no schema on search_path ({search_path}) exists; create it first")
    return schema


async def _recorded(connection: asyncpg.Connection, table: str) -> list[asyncpg.Record]:
    return await connection.fetch(
        f"SELECT version, name, checksum, applied_at FROM {table} ORDER BY version"
    )


def _statuses(
    known: Sequence[Migration], recorded: Sequence[asyncpg.Record]
) -> list[MigrationStatus]:
    rows = {row["version"]: row for row in recorded}
    found: list[MigrationStatus] = []
    for migration in known:
        row = rows.pop(migration.version, None)
        problem = None
        if row is not None and row["checksum"] != migration.checksum:
            problem = (
                f"migration {migration.label} changed after it was applied; released"
                " migrations are never edited: restore the file and add a new migration"
            )
        applied_at = None if row is None else row["applied_at"]
        found.append(MigrationStatus(migration.version, migration.name, applied_at, problem))
    for version, row in rows.items():
        problem = (
            f"the database has migration {version:04d}_{row['name']}, which this release does"
            " not know: a newer release migrated it; run that release or a later one"
        )
        found.append(MigrationStatus(version, row["name"], row["applied_at"], problem))
    return sorted(found, key=lambda item: item.version)
