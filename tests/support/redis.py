"""The real Redis the tests share, and the databases they empty.

``CITADEL_TEST_REDIS_URL`` names the server (default ``redis://127.0.0.1:6379``) and
``CITADEL_TEST_REDIS_DB`` the first of the three databases the suite uses (default 3): two
suites run at once on one server stay apart when their ranges differ.
"""

from __future__ import annotations

import contextlib
import os
import urllib.parse
from collections.abc import AsyncIterator

import redis.asyncio as redis

SERVER = os.environ.get("CITADEL_TEST_REDIS_URL", "redis://127.0.0.1:6379").rstrip("/")
_ADDRESS = urllib.parse.urlsplit(SERVER)
REDIS_HOST = _ADDRESS.hostname or "127.0.0.1"
REDIS_PORT = _ADDRESS.port or 6379
FIRST_DB = int(os.environ.get("CITADEL_TEST_REDIS_DB", "3"))
SPINE_DB = FIRST_DB  # the bus and claims tests (their keys are fixed names: one database to empty)
RELOAD_DB = FIRST_DB + 1  # the two-worker reload test
SHARED_DB = FIRST_DB + 2  # caches and rate limits: keys a test makes unique itself


def redis_url(db: int = SPINE_DB, port: int | None = None) -> str:
    """Database ``db`` of the test server, or of a server on ``port`` of the same host."""
    if port is None:
        return f"{SERVER}/{db}"
    return f"redis://{REDIS_HOST}:{port}/{db}"


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
