"""Databases for tests: a throwaway schema per test, in the local Postgres or any other server.

Isolation is by schema, not by database: the URL's ``search_path`` query parameter becomes a
session setting (asyncpg sends unknown URL parameters to the server), so everything a test
creates lands in its own schema, which is dropped afterwards.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg

from agent_server.store.embedded import EmbeddedPostgres
from agent_server.store.migrations import upgrade
from agent_server.store.postgres import open_pool

# The Postgres the tests use: CITADEL_TEST_DATABASE_URL, else the local one (trust auth).
LOCAL_DATABASE = os.environ.get(
    "CITADEL_TEST_DATABASE_URL", "postgresql://root@127.0.0.1:5432/test"
)


def with_query(url: str, **params: str) -> str:
    """``url`` with ``params`` added to (or replacing those in) its query string."""
    parts = urllib.parse.urlsplit(url)
    query = dict(urllib.parse.parse_qsl(parts.query, keep_blank_values=True)) | params
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query, safe="/")))


@contextlib.asynccontextmanager
async def isolated_database_url(base: str = LOCAL_DATABASE) -> AsyncIterator[str]:
    """A fresh schema ``t_<random>`` in ``base``'s database; yields ``base`` selecting it."""
    schema = f"t_{secrets.token_hex(6)}"
    connection = await asyncpg.connect(base, timeout=10)
    try:
        await connection.execute(f"CREATE SCHEMA {schema}")
        try:
            yield with_query(base, search_path=schema)
        finally:
            await connection.execute(f"DROP SCHEMA {schema} CASCADE")
    finally:
        await connection.close()


@contextlib.asynccontextmanager
async def migrated_pool(url: str, max_size: int = 2) -> AsyncIterator[asyncpg.Pool]:
    """A pool on ``url`` (the server's own codecs and timeouts) with every migration applied."""
    pool = await open_pool(
        url, min_size=1, max_size=max_size, statement_timeout=30, connect_timeout=5
    )
    try:
        await upgrade(pool)
        yield pool
    finally:
        await pool.close()


@contextlib.asynccontextmanager
async def embedded_server(data_dir: Path) -> AsyncIterator[str]:
    """The embedded server under ``data_dir`` for the length of the block; yields its URL."""
    server = EmbeddedPostgres()
    url = await server.start(data_dir)
    try:
        yield url
    finally:
        await server.stop()


CITADEL_TABLES = (
    "threads",
    "messages",
    "runs",
    "run_events",
    "audit_log",
    "kb_documents",
    "ingest_jobs",
    "api_keys",
)


async def table_rows(url: str) -> dict[str, list[tuple]]:
    """Every row of Citadel's tables but ``workers`` (whose heartbeat ticks), to compare a
    database before and after a request that must change nothing."""
    connection = await asyncpg.connect(url, timeout=10)
    try:
        return {
            table: [
                tuple(row)
                for row in await connection.fetch(f"SELECT * FROM {table} ORDER BY 1, 2, 3")
            ]
            for table in CITADEL_TABLES
        }
    finally:
        await connection.close()
