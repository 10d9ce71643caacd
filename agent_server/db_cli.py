"""``citadel db upgrade`` and ``citadel db status``: the database schema from the command line.

Without ``DATABASE_URL`` they act on the embedded server under the data directory, starting
it for the command and stopping it after (unless a running Citadel still holds it).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterator

import asyncpg

from agent_server.store.embedded import DatabaseSettings, database_url
from agent_server.store.migrations import MigrationError, status, upgrade
from agent_server.store.postgres import DatabaseUnavailable, open_pool

COMMANDS = ("upgrade", "status")


async def run_db_command(command: str, settings: DatabaseSettings) -> int:
    """Run ``command`` (one of ``COMMANDS``); the exit status: 0 done, 1 failed or refused."""
    if command not in COMMANDS:
        raise ValueError(f"unknown db command {command!r}; expected one of {COMMANDS}")
    try:
        async with one_connection(settings) as pool:
            return await (_upgrade(pool) if command == "upgrade" else _status(pool))
    except (DatabaseUnavailable, MigrationError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


@contextlib.asynccontextmanager
async def one_connection(settings: DatabaseSettings) -> AsyncIterator[asyncpg.Pool]:
    """A pool of one connection to the configured database, for a command's few queries."""
    async with database_url(settings) as url:
        pool = await open_pool(
            url,
            min_size=1,
            max_size=1,
            statement_timeout=settings.db_statement_timeout,
            connect_timeout=settings.db_connect_timeout,
        )
        try:
            yield pool
        finally:
            await pool.close()


async def _upgrade(pool: asyncpg.Pool) -> int:
    applied = await upgrade(pool)
    for migration in applied:
        print(f"applied {migration.label}")
    if not applied:
        print("up to date: no migration to apply")
    return 0


async def _status(pool: asyncpg.Pool) -> int:
    statuses = await status(pool)
    rows = [("version", "name", "applied at")]
    for item in statuses:
        when = "pending" if item.applied_at is None else item.applied_at.isoformat(" ", "seconds")
        rows.append((f"{item.version:04d}", item.name, when))
    widths = [max(len(row[column]) for row in rows) for column in range(2)]
    for version, name, when in rows:
        print(f"{version:<{widths[0]}}  {name:<{widths[1]}}  {when}")
    pending = sum(item.applied_at is None for item in statuses)
    print(f"{len(statuses) - pending} applied, {pending} pending")
    problems = [item.problem for item in statuses if item.problem]
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    return 1 if problems else 0
