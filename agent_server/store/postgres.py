"""The asyncpg pool: one place that connects to Postgres, so every caller gets the same
timeouts, the same JSON codec and the same clear error when the database cannot be reached.

Query parameters in the URL that libpq does not define (``?search_path=tenant``) are sent
to the server as session settings; tests isolate themselves by schema that way.
"""

from __future__ import annotations

import contextlib
import urllib.parse
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import orjson

from agent_server.store.base import Actor, StorageUnavailable
from agent_server.urls import redact_url


class DatabaseUnavailable(StorageUnavailable):
    """Postgres cannot be used at the configured URL; the message says what to check."""


_CONNECT_ERRORS = (OSError, TimeoutError, ValueError, asyncpg.PostgresError, asyncpg.InterfaceError)


async def open_pool(
    url: str,
    *,
    min_size: int,
    max_size: int,
    statement_timeout: float,
    connect_timeout: float,
) -> asyncpg.Pool:
    """A pool whose connections cancel statements after ``statement_timeout`` seconds (0: never)
    and read and write json/jsonb as Python values through orjson.

    One connection is made before returning, so a wrong URL fails here, within
    ``connect_timeout``, rather than on the first request.
    """
    settings = {"statement_timeout": str(round(statement_timeout * 1000))}
    pool = asyncpg.create_pool(
        url,
        min_size=min_size,
        max_size=max_size,
        timeout=connect_timeout,
        server_settings=settings,
        init=_init_connection,
    )
    try:
        await pool
        await pool.fetchval("SELECT 1", timeout=connect_timeout)
    except _CONNECT_ERRORS as error:
        pool.terminate()
        raise DatabaseUnavailable(_explain(url, error)) from None
    return pool


async def _init_connection(connection: asyncpg.Connection) -> None:
    for name in ("json", "jsonb"):
        await connection.set_type_codec(
            name, schema="pg_catalog", encoder=_dumps, decoder=orjson.loads, format="text"
        )


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def _explain(url: str, error: BaseException) -> str:
    """What went wrong and what to check, never quoting the password (asyncpg's own messages
    may echo parts of the URL)."""
    detail = f"{type(error).__name__}: {error}".rstrip(": ")
    password = urllib.parse.urlsplit(url).password
    if password:
        for form in {password, urllib.parse.unquote(password)}:
            detail = detail.replace(form, "***")
    if isinstance(error, asyncpg.InvalidCatalogNameError):
        hint = "the database does not exist; create it or fix the name in DATABASE_URL"
    elif isinstance(error, asyncpg.InvalidAuthorizationSpecificationError):
        hint = "the server refused the user or password in DATABASE_URL"
    elif isinstance(error, TimeoutError):
        hint = "the server did not answer in time; check the host, port and firewall"
    elif isinstance(error, OSError):
        hint = "nothing accepted the connection; check that Postgres runs at that host and port"
    else:
        hint = "check DATABASE_URL and the server's log"
    return f"cannot use Postgres at {redact_url(url)}: {detail} ({hint})"


# Errors and audit shared by the stores ------------------------------------------------------

CONNECTION_ERRORS = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.QueryCanceledError,
)


@contextlib.asynccontextmanager
async def db_errors() -> AsyncIterator[None]:
    """Database trouble as :class:`StorageUnavailable`, the one error callers handle."""
    try:
        yield
    except CONNECTION_ERRORS as error:
        raise StorageUnavailable(f"the database is unavailable: {error}") from error


async def audit(
    connection: asyncpg.Connection,
    actor: Actor,
    action: str,
    thread_id: str | None,
    details: dict[str, Any],
) -> None:
    """One audit-log row, in the caller's transaction: the change and its record commit together."""
    await connection.execute(
        "INSERT INTO audit_log (actor, action, thread_id, details, remote_addr)"
        " VALUES ($1, $2, $3, $4, $5)",
        actor.user_id,
        action,
        thread_id,
        details,
        actor.remote_addr,
    )
