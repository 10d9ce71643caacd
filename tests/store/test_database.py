"""Postgres: the pool, migrations, the embedded server and ``citadel db``, on real servers.

``database_url`` runs a test on the local Postgres and on the embedded server, each time in a
fresh schema; the embedded server is shared by the session.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import secrets
import signal
import socket
import sys
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import psutil
import pytest
from pydantic import SecretStr

from agent_server.db_cli import run_db_command
from agent_server.store.embedded import EmbeddedPostgres
from agent_server.store.migrations import (
    MigrationError,
    load_migrations,
    status,
    upgrade,
)
from agent_server.store.postgres import DatabaseUnavailable, open_pool
from agent_server.urls import redact_url
from bench.servers import free_port
from tests.support.database import embedded_server, with_query
from tests.support.waiting import eventually

REPO = Path(__file__).parents[2]
PACKAGED = REPO / "agent_server" / "store" / "migrations"
SECRET = "s3cret-Pa55"


async def pool_for(url: str, **overrides: float) -> asyncpg.Pool:
    options = {"min_size": 1, "max_size": 2, "statement_timeout": 30, "connect_timeout": 5}
    return await open_pool(url, **(options | overrides))


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    opened = await pool_for(database_url)
    yield opened
    await opened.close()


def write_migrations(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(exist_ok=True)
    for name, sql in files.items():
        (directory / name).write_text(sql)
    return directory


def threads_sql() -> str:
    return (PACKAGED / "0001_threads.sql").read_text()


# -- redact --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            f"postgresql://app:{SECRET}@db.example:6432/citadel?sslmode=require",
            "postgresql://app@db.example:6432/citadel?sslmode=require",
        ),
        (
            f"postgresql://app@h1,h2:5433/db?password={SECRET}&search_path=s",
            "postgresql://app@h1,h2:5433/db?search_path=s",
        ),
        ("postgresql://app:p%40ss@host/db", "postgresql://app@host/db"),
        (
            "postgresql://postgres@/citadel?host=/tmp/pg",
            "postgresql://postgres@/citadel?host=/tmp/pg",
        ),
    ],
)
def test_redact_drops_only_the_password(url: str, shown: str) -> None:
    assert redact_url(url) == shown


# -- the pool ------------------------------------------------------------------------------


async def test_url_query_parameters_are_server_settings(
    database_url: str, pool: asyncpg.Pool
) -> None:
    schema = urllib.parse.parse_qs(urllib.parse.urlsplit(database_url).query)["search_path"][0]
    assert await pool.fetchval("SELECT current_schema()") == schema
    await pool.execute("CREATE TABLE placed (id int)")
    assert await pool.fetchval("SELECT to_regclass($1) IS NOT NULL", f"{schema}.placed")


async def test_jsonb_and_json_round_trip_through_orjson(pool: asyncpg.Pool) -> None:
    await pool.execute("CREATE TABLE docs (body jsonb NOT NULL, raw json NOT NULL)")
    value = {"text": "héllo ✓ \u2028", "items": [1, 2.5, None, True], "nested": {"empty": {}}}
    await pool.execute("INSERT INTO docs VALUES ($1, $2)", value, value)
    assert tuple(await pool.fetchrow("SELECT body, raw FROM docs")) == (value, value)
    # orjson, not the json module: datetimes are written natively, as RFC 3339.
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert await pool.fetchval("SELECT $1::jsonb", {"at": when}) == {
        "at": "2026-01-02T03:04:05+00:00"
    }
    # A str is a JSON string value, never parsed as JSON text.
    assert await pool.fetchval("SELECT $1::jsonb", '{"a": 1}') == '{"a": 1}'
    assert await pool.fetchval("""SELECT '{"a": [1]}'::jsonb""") == {"a": [1]}


async def test_statement_timeout_cancels_a_longer_statement(database_url: str) -> None:
    pool = await pool_for(database_url, max_size=1, statement_timeout=0.2)
    try:
        assert await pool.fetchval("SHOW statement_timeout") == "200ms"
        with pytest.raises(asyncpg.QueryCanceledError, match="statement timeout"):
            await pool.fetchval("SELECT pg_sleep(30)")
        assert await pool.fetchval("SELECT 1") == 1  # the connection is still usable
    finally:
        await pool.close()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never says a word."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


@pytest.mark.parametrize(
    ("case", "hint"),
    [
        ("refused", "nothing accepted the connection"),
        ("no such host", "nothing accepted the connection"),
        ("no such database", "the database does not exist"),
        ("silent server", "did not answer in time"),
    ],
)
async def test_unusable_url_fails_at_once_without_the_password(
    case: str, hint: str, silent_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    url = {
        "refused": f"postgresql://root:{SECRET}@127.0.0.1:{free_port()}/test",
        "no such host": f"postgresql://root:{SECRET}@no-such-host.invalid:5432/test",
        "no such database": f"postgresql://root:{SECRET}@127.0.0.1:5432/no_such_database",
        "silent server": f"postgresql://root:{SECRET}@127.0.0.1:{silent_port}/test",
    }[case]
    with pytest.raises(DatabaseUnavailable) as caught:
        await pool_for(url, connect_timeout=0.5)
    message = str(caught.value)
    assert redact_url(url) in message and hint in message
    assert SECRET not in message and SECRET not in caplog.text
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


async def reload_config(admin: asyncpg.Connection, url: str) -> None:
    """``pg_reload_conf()`` only signals the server; wait until new sessions see the reload."""
    before = await admin.fetchval("SELECT pg_conf_load_time()")
    await admin.execute("SELECT pg_reload_conf()")

    async def reloaded() -> bool:
        # A new session has the server's last reload time: any other than before means a
        # reload (not compared by order, which a step of the wall clock would break).
        connection = await asyncpg.connect(url)
        try:
            return await connection.fetchval("SELECT pg_conf_load_time()") != before
        finally:
            await connection.close()

    await eventually(reloaded)


def require_password(hba: Path, role: str) -> str:
    """Make ``role`` log in with its password over the socket; returns the old hba file."""
    original = hba.read_text()
    hba.write_text(f"local all {role} scram-sha-256\n{original}")
    return original


@pytest.fixture
async def password_role(embedded_postgres_url: str) -> AsyncIterator[str]:
    """A role that must log in with its password (scram) on the embedded server; the local
    server and the rest of the embedded one trust every connection."""
    role = f"pw_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(embedded_postgres_url)
    hba = Path(await admin.fetchval("SHOW hba_file"))
    original = require_password(hba, role)
    try:
        await admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'right-password'")
        await reload_config(admin, embedded_postgres_url)
        yield role
    finally:
        hba.write_text(original)  # noqa: ASYNC240 (a small local file)
        await reload_config(admin, embedded_postgres_url)
        await admin.execute(f"DROP ROLE IF EXISTS {role}")
        await admin.close()


def as_user(url: str, user: str, password: str) -> str:
    parts = urllib.parse.urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:{password}@{host}"))


async def test_a_wrong_password_fails_without_showing_it(
    embedded_postgres_url: str, password_role: str
) -> None:
    right = await pool_for(as_user(embedded_postgres_url, password_role, "right-password"))
    assert await right.fetchval("SELECT current_user") == password_role
    await right.close()

    wrong = as_user(embedded_postgres_url, password_role, SECRET)
    with pytest.raises(DatabaseUnavailable, match="refused the user or password") as caught:
        await pool_for(wrong)
    assert "password authentication failed" in str(caught.value)
    assert SECRET not in str(caught.value)


# -- migrations ----------------------------------------------------------------------------


def test_packaged_migrations_load_with_their_checksums() -> None:
    migrations = load_migrations()
    assert migrations[0].label == "0001_threads"
    for migration in migrations:
        content = (PACKAGED / f"{migration.label}.sql").read_bytes()
        assert migration.checksum == hashlib.sha256(content).hexdigest()
        assert migration.sql == content.decode()


def test_migrations_load_by_version_and_reject_bad_names(tmp_path: Path) -> None:
    files = {"0010_later.sql": "SELECT 1", "0002_first.sql": "SELECT 2", "README.md": "notes"}
    loaded = load_migrations(write_migrations(tmp_path / "ok", files))
    assert [(m.version, m.name) for m in loaded] == [(2, "first"), (10, "later")]

    misnamed = write_migrations(tmp_path / "misnamed", {"2_short.sql": "SELECT 1"})
    with pytest.raises(MigrationError, match=r"2_short\.sql is not named NNNN_name\.sql"):
        load_migrations(misnamed)

    twice = {"0001_a.sql": "SELECT 1", "0001_b.sql": "SELECT 1"}
    with pytest.raises(MigrationError, match="share a version"):
        load_migrations(write_migrations(tmp_path / "twice", twice))


async def test_upgrade_applies_once_and_status_lists_it(
    database_url: str, pool: asyncpg.Pool
) -> None:
    before = await status(pool)
    assert [(s.label, s.applied_at) for s in before] == [
        ("0001_threads", None),
        ("0002_knowledge", None),
        ("0003_api_keys", None),
        ("0004_runs_admin", None),
    ]
    assert not await pool.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")

    applied = await upgrade(pool)
    assert [m.label for m in applied] == [m.label for m in load_migrations()]
    assert await upgrade(pool) == []

    after = await status(pool)
    assert [s.label for s in after] == [
        "0001_threads",
        "0002_knowledge",
        "0003_api_keys",
        "0004_runs_admin",
    ]
    assert all(s.applied_at is not None and s.problem is None for s in after)
    # Everything landed in this test's schema.
    schema = urllib.parse.parse_qs(urllib.parse.urlsplit(database_url).query)["search_path"][0]
    tables = await pool.fetch(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = $1", schema
    )
    assert {"schema_migrations", "threads", "messages", "runs", "run_events"} <= {
        row["table_name"] for row in tables
    }


async def test_concurrent_upgrades_apply_each_migration_exactly_once(
    database_url: str, tmp_path: Path
) -> None:
    # Migration 0002 waits at a gate this test holds, so both upgrades are surely in flight:
    # one inside 0002, the other waiting for the migration lock.
    gate_key = secrets.randbelow(2**31)
    migrations = load_migrations(
        write_migrations(
            tmp_path,
            {
                "0001_threads.sql": threads_sql(),
                "0002_gated.sql": f"SELECT pg_advisory_xact_lock({gate_key});\n"
                "CREATE TABLE gated (id int);\n",
            },
        )
    )
    gate = await asyncpg.connect(database_url)
    pools = [await pool_for(database_url, max_size=1) for _ in range(2)]
    try:
        await gate.execute("SELECT pg_advisory_lock($1)", gate_key)
        pids = [await p.fetchval("SELECT pg_backend_pid()") for p in pools]
        upgrades = [asyncio.create_task(upgrade(p, migrations)) for p in pools]

        async def both_waiting() -> bool:
            waiting = await gate.fetchval(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                " AND pid = ANY($1::int[])",
                pids,
            )
            return waiting == 2

        await eventually(both_waiting)
        await gate.execute("SELECT pg_advisory_unlock($1)", gate_key)
        results = await asyncio.gather(*upgrades)

        assert sorted([m.label for m in result] for result in results) == [
            [],
            ["0001_threads", "0002_gated"],
        ]
        rows = await gate.fetch("SELECT version FROM schema_migrations ORDER BY version")
        assert [row["version"] for row in rows] == [1, 2]
    finally:
        await gate.close()
        for p in pools:
            await p.close()


async def test_an_edited_migration_is_refused(pool: asyncpg.Pool, tmp_path: Path) -> None:
    directory = write_migrations(tmp_path, {"0001_threads.sql": threads_sql()})
    await upgrade(pool, load_migrations(directory))
    (directory / "0001_threads.sql").write_text(threads_sql() + "\n-- a small fix\n")
    edited = load_migrations(directory)

    with pytest.raises(MigrationError, match=r"0001_threads changed.*never edited"):
        await upgrade(pool, edited)
    [listed] = await status(pool, edited)
    assert listed.applied_at is not None and "never edited" in (listed.problem or "")


async def test_a_database_from_a_newer_release_is_refused(
    pool: asyncpg.Pool, tmp_path: Path
) -> None:
    newer = {"0001_threads.sql": threads_sql(), "9001_future.sql": "CREATE TABLE future ()"}
    await upgrade(pool, load_migrations(write_migrations(tmp_path, newer)))

    with pytest.raises(MigrationError, match="9001_future, which this release does not know"):
        await upgrade(pool)
    listed = await status(pool)
    assert [(s.label, s.problem is not None) for s in listed] == [
        ("0001_threads", False),
        ("0002_knowledge", False),  # pending: known to this release, not applied
        ("0003_api_keys", False),
        ("0004_runs_admin", False),
        ("9001_future", True),
    ]


async def test_upgrade_refuses_a_search_path_without_a_schema(database_url: str) -> None:
    pool = await pool_for(with_query(database_url, search_path="no_such_schema"))
    try:
        with pytest.raises(MigrationError, match=r"no schema on search_path.*create it first"):
            await upgrade(pool)
    finally:
        await pool.close()


# -- the embedded server -------------------------------------------------------------------


async def test_embedded_url_names_the_citadel_database(embedded_postgres_url: str) -> None:
    connection = await asyncpg.connect(embedded_postgres_url)
    try:
        assert await connection.fetchval("SELECT current_database()") == "citadel"
    finally:
        await connection.close()


async def test_a_second_handle_stopping_leaves_the_server_to_the_first(
    embedded_postgres_dir: Path, embedded_postgres_url: str
) -> None:
    async with embedded_server(embedded_postgres_dir) as url:
        assert url == embedded_postgres_url
    second = EmbeddedPostgres()
    await second.stop()  # never started: nothing to do
    connection = await asyncpg.connect(embedded_postgres_url)
    assert await connection.fetchval("SELECT 1") == 1
    await connection.close()


HOLD_THE_SERVER = """
import asyncio, sys
from pathlib import Path
from agent_server.store.embedded import EmbeddedPostgres

async def main():
    print(await EmbeddedPostgres().start(Path(sys.argv[1])), flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


def postmaster(pgdata: Path) -> psutil.Process:
    return psutil.Process(int((pgdata / "postmaster.pid").read_text().split()[0]))


def exited(process: psutil.Process) -> bool:
    """Gone, or a zombie: dead, only waiting for init to reap it."""
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def wait_exited(processes: list[psutil.Process]) -> None:
    async def all_exited() -> bool:
        return all(exited(process) for process in processes)

    await eventually(all_exited)


@pytest.mark.parametrize("crash", ["owner killed", "owner and postmaster killed", "pid reused"])
async def test_embedded_server_starts_after_its_owner_was_killed(
    crash: str, tmp_path: Path
) -> None:
    holder = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        HOLD_THE_SERVER,
        str(tmp_path),
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    first_url = (await holder.stdout.readline()).decode().strip()
    if not first_url:
        pytest.fail(f"the holder did not start: {(await holder.stderr.read()).decode()}")
    pgdata = tmp_path / "postgres"
    old = postmaster(pgdata)
    holder.kill()
    await holder.wait()
    if crash != "owner killed":
        doomed = [old, *old.children()]
        old.send_signal(signal.SIGKILL)
        await wait_exited(doomed)
    if crash == "pid reused":  # e.g. a container restarted: the pid is now someone else's
        pidfile = pgdata / "postmaster.pid"
        lines = pidfile.read_text().split("\n")
        pidfile.write_text("\n".join([str(os.getpid()), *lines[1:]]))

    server = EmbeddedPostgres()
    url = await server.start(tmp_path)
    try:
        assert url == first_url
        pool = await pool_for(url)
        assert [m.label for m in await upgrade(pool)] == [
            "0001_threads",
            "0002_knowledge",
            "0003_api_keys",
            "0004_runs_admin",
        ]
        await pool.close()
        current = postmaster(pgdata)
        assert (current.pid == old.pid) == (crash == "owner killed")
    finally:
        await server.stop()
    # The dead owner no longer counts as a holder, so this last handle stopped the server.
    assert not (pgdata / "postmaster.pid").exists()
    await wait_exited([current])


# -- citadel db ----------------------------------------------------------------------------


@dataclass
class DbSettings:
    """The fields of Settings that ``citadel db`` reads."""

    database_url: SecretStr | None
    data_dir: Path
    db_statement_timeout: float = 30.0
    db_connect_timeout: float = 5.0


async def test_db_status_and_upgrade(
    local_database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = DbSettings(SecretStr(local_database_url), tmp_path)

    assert await run_db_command("status", settings) == 0
    assert re.search(r"^0001\s+threads\s+pending$", capsys.readouterr().out, re.MULTILINE)

    assert await run_db_command("upgrade", settings) == 0
    assert (
        "applied 0001_threads\napplied 0002_knowledge\napplied 0003_api_keys"
        "\napplied 0004_runs_admin" in capsys.readouterr().out
    )

    assert await run_db_command("status", settings) == 0
    out = capsys.readouterr().out
    assert re.search(r"^0001\s+threads\s+\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", out, re.MULTILINE)
    assert "4 applied, 0 pending" in out

    assert await run_db_command("upgrade", settings) == 0
    assert "up to date" in capsys.readouterr().out


async def test_db_commands_exit_1_when_the_database_is_unusable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"postgresql://root:{SECRET}@127.0.0.1:{free_port()}/test"
    for command in ("status", "upgrade"):
        assert await run_db_command(command, DbSettings(SecretStr(url), tmp_path)) == 1
        captured = capsys.readouterr()
        assert "error: cannot use Postgres at postgresql://root@127.0.0.1" in captured.err
        assert SECRET not in captured.out + captured.err


async def test_db_commands_exit_1_on_a_database_from_a_newer_release(
    local_database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    newer = {"0001_threads.sql": threads_sql(), "9001_future.sql": "CREATE TABLE future ()"}
    pool = await pool_for(local_database_url)
    await upgrade(pool, load_migrations(write_migrations(tmp_path / "newer", newer)))
    await pool.close()
    settings = DbSettings(SecretStr(local_database_url), tmp_path)

    assert await run_db_command("status", settings) == 1
    captured = capsys.readouterr()
    assert re.search(r"^9001\s+future\s+\d{4}-", captured.out, re.MULTILINE)
    assert "which this release does not know" in captured.err

    assert await run_db_command("upgrade", settings) == 1
    assert "which this release does not know" in capsys.readouterr().err


async def test_db_upgrade_without_a_url_uses_the_embedded_server(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = DbSettings(None, tmp_path / "data")

    assert await run_db_command("upgrade", settings) == 0
    assert (
        "applied 0001_threads\napplied 0002_knowledge\napplied 0003_api_keys"
        "\napplied 0004_runs_admin" in capsys.readouterr().out
    )
    assert await run_db_command("status", settings) == 0
    assert "4 applied, 0 pending" in capsys.readouterr().out
    # The command started the server for itself, so it stopped it too.
    assert not (tmp_path / "data" / "postgres" / "postmaster.pid").exists()
