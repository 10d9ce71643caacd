"""``citadel keys``: create, list and revoke project API keys in an isolated database."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import asyncpg

from agent_server.store.api_keys import parse_secret
from agent_server.store.postgres import open_pool
from agent_server.store.postgres_api_keys import PostgresApiKeyStore
from tests.support.database import isolated_database_url

CITADEL = [sys.executable, "-m", "agent_server.cli"]


async def citadel_keys(*args: str, database: str, data_dir: Path) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *CITADEL,
        "keys",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "DATABASE_URL": database, "CITADEL_DATA_DIR": str(data_dir)},
    )
    async with asyncio.timeout(60):
        stdout, stderr = await process.communicate()
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


async def test_keys_are_created_listed_and_revoked(tmp_path: Path):
    async with isolated_database_url() as database:

        async def keys(*args: str) -> tuple[int, str, str]:
            return await citadel_keys(*args, database=database, data_dir=tmp_path)

        code, out, err = await keys(
            "create", "CI deploys", "--scope", "agents", "--scope", "kb:docs"
        )
        assert code == 0, err
        secret = out.strip()
        key_id = parse_secret(secret)
        assert key_id is not None and out == f"{secret}\n"  # stdout: the secret alone
        assert f"created {key_id} (CI deploys) with scopes agents, kb:docs" in err
        assert "will not be shown again" in err and secret not in err

        code, listed, _ = await keys("list")
        assert code == 0
        header, row = listed.splitlines()
        assert header.split() == ["id", "name", "scopes", "created", "last", "used", "revoked"]
        assert row.startswith(key_id) and "CI deploys" in row and "agents,kb:docs" in row
        assert row.split()[-2:] == ["never", "-"] and secret not in listed

        pool = await open_pool(
            database, min_size=1, max_size=1, statement_timeout=10, connect_timeout=5
        )
        try:
            store = PostgresApiKeyStore(pool)
            assert await store.verify(secret) is not None

            code, out, err = await keys("revoke", key_id)
            assert code == 0 and f"revoked {key_id}" in out, err
            assert await store.verify(secret) is None
            _, listed, _ = await keys("list")
            assert listed.splitlines()[1].split()[-1] != "-"  # the time it was revoked

            code, _, err = await keys("revoke", key_id)
            assert code == 1 and f"there is no key {key_id}, or it is revoked already" in err
            code, _, err = await keys("revoke", "key_nosuchkey00")
            assert code == 1 and "there is no key key_nosuchkey00" in err

            audited = await pool.fetch("SELECT actor, action FROM audit_log ORDER BY id")
            assert [tuple(row) for row in audited] == [
                ("cli", "api_key.create"),
                ("cli", "api_key.revoke"),
            ]
        finally:
            await pool.close()


async def test_bad_input_is_a_usage_error_and_touches_nothing(tmp_path: Path):
    async with isolated_database_url() as database:

        async def keys(*args: str) -> tuple[int, str, str]:
            return await citadel_keys(*args, database=database, data_dir=tmp_path)

        code, _, err = await keys("create", "ci", "--scope", "agents", "--scope", "admin")
        assert code == 2 and "invalid scope 'admin'" in err
        code, _, err = await keys("create", "ci", "--scope", "kb:a/b")
        assert code == 2 and "invalid scope 'kb:a/b'" in err
        code, _, err = await keys("create", "ci")
        assert code == 2 and "--scope" in err
        code, _, err = await keys("create", " ", "--scope", "agents")
        assert code == 2 and "name" in err
        assert (await keys())[0] == 2
        assert (await keys("revoke"))[0] == 2

        connection = await asyncpg.connect(database)
        try:  # not even migrated: bad input is refused before the database is opened
            assert await connection.fetchval("SELECT to_regclass('api_keys')") is None
        finally:
            await connection.close()


async def test_an_unreachable_database_is_an_error(tmp_path: Path, unused_tcp_port: int):
    database = f"postgresql://citadel:s3cret@127.0.0.1:{unused_tcp_port}/citadel"
    code, out, err = await citadel_keys("list", database=database, data_dir=tmp_path)
    assert code == 1 and out == ""
    assert "cannot use Postgres" in err and "s3cret" not in err
