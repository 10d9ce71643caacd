"""The real Redis at 127.0.0.1:6379, one database emptied for the tests that share it."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import redis.asyncio as redis

REDIS_PORT = 6379
SPINE_DB = 3  # the bus and claims tests (their keys are fixed names: one database to empty)


def redis_url(db: int = SPINE_DB, port: int = REDIS_PORT) -> str:
    return f"redis://127.0.0.1:{port}/{db}"


def client(url: str, timeout: float = 2.0) -> redis.Redis:
    return redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)


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
