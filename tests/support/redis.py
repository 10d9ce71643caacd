"""The real Redis at 127.0.0.1:6379, one database emptied for the tests that share it."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import redis.asyncio as redis

REDIS_PORT = 6379
SPINE_DB = 3  # the bus and claims tests (their keys are fixed names: one database to empty)


def redis_url(db: int = SPINE_DB, port: int = REDIS_PORT) -> str:
    return f"redis://127.0.0.1:{port}/{db}"


def client(url: str, timeout: float | None = 2.0, name: str | None = None) -> redis.Redis:
    """A client whose connections carry ``name`` (``CLIENT SETNAME``), to find them in
    :func:`connections`. ``timeout`` None: no socket timeouts at all."""
    return redis.from_url(
        url, socket_timeout=timeout, socket_connect_timeout=timeout, client_name=name
    )


async def connections(via: redis.Redis, name: str) -> list[dict[str, str]]:
    """The server's view (``CLIENT LIST``) of the connections named ``name``: ``flags``
    holds ``b`` while one waits in a blocking command, ``sub`` counts its subscriptions."""
    return [entry for entry in await via.client_list() if entry["name"] == name]


@contextlib.asynccontextmanager
async def empty_redis(db: int = SPINE_DB) -> AsyncIterator[str]:
    """The URL of database ``db``, emptied before and after."""
    url = redis_url(db)
    connection = client(url)
    try:
        await connection.flushdb()
        yield url
        await connection.flushdb()
    finally:
        await connection.aclose()
