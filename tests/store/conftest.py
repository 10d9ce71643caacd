"""Database fixtures: one embedded server per session, one fresh schema per test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.database import LOCAL_DATABASE, embedded_server, isolated_database_url


@pytest.fixture(scope="session")
def embedded_postgres_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("embedded-postgres")


@pytest.fixture(scope="session")
async def embedded_postgres_url(embedded_postgres_dir: Path) -> AsyncIterator[str]:
    """The embedded server, started once for the session and stopped at its end."""
    async with embedded_server(embedded_postgres_dir) as url:
        yield url


@pytest.fixture(params=["local", "embedded"])
async def database_url(
    request: pytest.FixtureRequest, embedded_postgres_url: str
) -> AsyncIterator[str]:
    """A fresh schema, on the local Postgres and on the embedded server in turn."""
    base = LOCAL_DATABASE if request.param == "local" else embedded_postgres_url
    async with isolated_database_url(base) as url:
        yield url


@pytest.fixture
async def local_database_url() -> AsyncIterator[str]:
    """A fresh schema on the local Postgres, for tests that need one server only."""
    async with isolated_database_url() as url:
        yield url
