"""Threads, runs, events and the audit log in Postgres (asyncpg).

Every write a run makes is one transaction: the start (thread, run row, the client's new
messages) and the end (the run's messages, state, interrupts, outcome and its last events).
Events in between arrive in batches from the store pump (:class:`~agent_server.runs.pump.LogPump`).

Runs belong to a worker (one process). A worker that dies leaves its runs ``running``;
:meth:`PostgresThreadStore.recover` marks them failed: at once for a dead process on this
host, after :data:`WORKER_LEASE` of silence for other hosts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from dataclasses import asdict
from datetime import datetime
from typing import Any

import asyncpg
import psutil

from agent_server.store.base import (
    Actor,
    AuditEntry,
    EventBatch,
    Message,
    PendingInterrupt,
    RunCursor,
    RunEnd,
    RunQuery,
    RunRecord,
    RunStart,
    RunStatus,
    ThreadRecord,
    ThreadSummary,
    token_totals,
)
from agent_server.store.postgres import CONNECTION_ERRORS, audit, db_errors
from agent_server.tasks import stop_tasks

logger = logging.getLogger(__name__)

HEARTBEAT_INTERVAL = 5.0  # seconds between a worker's heartbeats
WORKER_LEASE = 30.0  # a worker on another host silent this long is considered dead

_RUN_COLUMNS = (
    "thread_id, run_id, owner, status, last_seq, started_at, outcome, error_code,"
    " error_message, input_tokens, output_tokens, usage, protocol_version, worker_id,"
    " first_event_at, finished_at"
)


class PostgresThreadStore:
    def __init__(self, pool: asyncpg.Pool, *, event_retention: float) -> None:
        self._pool = pool
        self._event_retention = event_retention
        self.worker_id = uuid.uuid4()
        self._maintenance: asyncio.Task[None] | None = None

    def pool_use(self) -> dict[str, float]:
        """Connections of the pool by state, and its ceiling (metrics read it at scrape)."""
        idle = self._pool.get_idle_size()
        return {
            "in_use": self._pool.get_size() - idle,
            "idle": idle,
            "max": self._pool.get_max_size(),
        }

    # Worker lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Register this worker, recover runs of dead ones, and keep the lease fresh."""
        async with db_errors():
            await self._pool.execute(
                "INSERT INTO workers (id, host, pid) VALUES ($1, $2, $3)",
                self.worker_id,
                socket.gethostname(),
                os.getpid(),
            )
        recovered = await self.recover()
        if recovered:
            logger.warning("marked %d run(s) of stopped workers as failed", recovered)
        self._maintenance = asyncio.create_task(self._maintain(), name="store maintenance")

    async def close(self) -> None:
        if self._maintenance is not None:
            await stop_tasks([self._maintenance])
        with contextlib.suppress(*CONNECTION_ERRORS):
            await self._pool.execute("DELETE FROM workers WHERE id = $1", self.worker_id)

    async def _maintain(self) -> None:
        beats = 0
        while True:
            await asyncio.sleep(HEARTBEAT_INTERVAL)
            beats += 1
            try:
                await self._pool.execute(
                    "UPDATE workers SET heartbeat_at = now() WHERE id = $1", self.worker_id
                )
                await self.recover()
                if beats % 720 == 0:  # hourly
                    await self._expire_events()
            except CONNECTION_ERRORS as error:
                logger.warning("store maintenance skipped: %s", error)

    async def check(self) -> None:
        async with db_errors():
            await self._pool.fetchval("SELECT 1")

    async def recover(self) -> int:
        async with db_errors(), self._pool.acquire() as connection:
            workers = await connection.fetch(
                "SELECT id, host, pid, started_at,"
                " heartbeat_at < now() - make_interval(secs => $1) AS silent FROM workers",
                WORKER_LEASE,
            )
            dead = [row["id"] for row in workers if _is_dead(row, self.worker_id)]
            if not dead:
                return 0
            async with connection.transaction():
                result = await connection.execute(
                    "UPDATE runs SET status = 'failed', error_code = 'interrupted',"
                    " error_message = 'the server stopped during this run', finished_at = now()"
                    " WHERE status = 'running' AND worker_id = ANY($1::uuid[])",
                    dead,
                )
                await connection.execute("DELETE FROM workers WHERE id = ANY($1::uuid[])", dead)
        return int(result.split()[-1])

    async def _expire_events(self) -> None:
        await self._pool.execute(
            "DELETE FROM run_events WHERE created_at < now() - make_interval(secs => $1)",
            self._event_retention,
        )

    # Threads ---------------------------------------------------------------------------------

    async def load(self, thread_id: str) -> ThreadRecord | None:
        async with db_errors():
            row = await self._pool.fetchrow(
                "SELECT owner, title, state, pending_interrupts,"
                " coalesce((SELECT jsonb_agg(body ORDER BY position) FROM messages"
                "           WHERE thread_id = t.id), '[]'::jsonb) AS messages"
                " FROM threads t WHERE id = $1",
                thread_id,
            )
        if row is None:
            return None
        return ThreadRecord(
            thread_id,
            row["owner"],
            row["title"],
            row["messages"],
            row["state"],
            [PendingInterrupt(**item) for item in row["pending_interrupts"]],
        )

    async def list_threads(
        self, owner: str, limit: int, before: tuple[datetime, str] | None
    ) -> list[ThreadSummary]:
        async with db_errors():
            rows = await self._pool.fetch(
                "SELECT id, title, message_count, created_at, updated_at FROM threads"
                " WHERE owner = $1 AND ($2::timestamptz IS NULL OR (updated_at, id) < ($2, $3))"
                " ORDER BY updated_at DESC, id DESC LIMIT $4",
                owner,
                before[0] if before else None,
                before[1] if before else "",
                limit,
            )
        return [ThreadSummary(*row) for row in rows]

    async def audit(self, actor: Actor, action: str, details: dict[str, Any]) -> None:
        async with db_errors(), self._pool.acquire() as connection:
            await audit(connection, actor, action, None, details)

    async def list_audit(
        self, limit: int, before_id: int | None = None, actor: str | None = None
    ) -> list[AuditEntry]:
        async with db_errors():  # by the primary key, or the (actor, at) index
            rows = await self._pool.fetch(
                "SELECT id, at, actor, action, thread_id, details, remote_addr FROM audit_log"
                " WHERE ($1::bigint IS NULL OR id < $1) AND ($2::text IS NULL OR actor = $2)"
                " ORDER BY id DESC LIMIT $3",
                before_id,
                actor,
                limit,
            )
        return [AuditEntry(*row) for row in rows]

    async def rename_thread(self, thread_id: str, owner: str, title: str, actor: Actor) -> bool:
        async with (
            db_errors(),
            self._pool.acquire() as connection,
            connection.transaction(),
        ):
            result = await connection.execute(
                "UPDATE threads SET title = $3, updated_at = now() WHERE id = $1 AND owner = $2",
                thread_id,
                owner,
                title,
            )
            if result != "UPDATE 1":
                return False
            await audit(connection, actor, "thread.rename", thread_id, {"title": title})
        return True

    async def amend_answer(self, thread_id: str, owner: str, message_id: str, text: str) -> bool:
        async with db_errors(), self._pool.acquire() as connection:
            result = await connection.execute(
                "UPDATE messages m SET body = jsonb_set(m.body, '{content}', to_jsonb($4::text))"
                " FROM threads t WHERE t.id = m.thread_id AND m.thread_id = $1 AND t.owner = $2"
                " AND m.message_id = $3 AND m.role = 'assistant'",
                thread_id,
                owner,
                message_id,
                text,
            )
        return result == "UPDATE 1"

    async def delete_thread(self, thread_id: str, owner: str, actor: Actor) -> bool:
        """Messages, runs and events go with the thread (ON DELETE CASCADE); the audit
        entry stays."""
        async with (
            db_errors(),
            self._pool.acquire() as connection,
            connection.transaction(),
        ):
            row = await connection.fetchrow(
                "DELETE FROM threads WHERE id = $1 AND owner = $2 RETURNING message_count",
                thread_id,
                owner,
            )
            if row is None:
                return False
            await audit(
                connection, actor, "thread.delete", thread_id, {"messages": row["message_count"]}
            )
        return True

    # Runs ------------------------------------------------------------------------------------

    async def start_run(self, start: RunStart) -> None:
        async with (
            db_errors(),
            self._pool.acquire() as connection,
            connection.transaction(),
        ):
            await connection.execute(
                "INSERT INTO threads (id, owner, title) VALUES ($1, $2, $3)"
                " ON CONFLICT (id) DO NOTHING",
                start.thread_id,
                start.owner,
                start.title,
            )
            await _append_messages(connection, start.thread_id, start.new_messages)
            await connection.execute(
                "INSERT INTO runs (thread_id, run_id, owner, status, protocol_version, worker_id)"
                " VALUES ($1, $2, $3, 'running', $4, $5)"
                " ON CONFLICT (thread_id, run_id) DO UPDATE SET status = 'running',"
                "   outcome = NULL, error_code = NULL, error_message = NULL,"
                "   worker_id = EXCLUDED.worker_id, finished_at = NULL",
                start.thread_id,
                start.run_id,
                start.owner,
                start.protocol_version,
                self.worker_id,
            )

    async def append_events(self, batches: list[EventBatch]) -> None:
        async with db_errors(), self._pool.acquire() as connection:
            await _insert_events(connection, batches)

    async def finish_run(self, end: RunEnd) -> None:
        input_tokens, output_tokens = token_totals(end.usage)
        async with (
            db_errors(),
            self._pool.acquire() as connection,
            connection.transaction(),
        ):
            status = await connection.fetchval(
                "SELECT status FROM runs WHERE thread_id = $1 AND run_id = $2 FOR UPDATE",
                end.thread_id,
                end.run_id,
            )
            if status != RunStatus.RUNNING:
                return  # stored already: a retry whose first attempt did commit
            if end.events is not None:
                await _insert_events(connection, [end.events])
            await _append_messages(connection, end.thread_id, end.new_messages)
            await connection.execute(
                "UPDATE threads SET state = $2, pending_interrupts = $3, updated_at = now()"
                " WHERE id = $1",
                end.thread_id,
                end.state,
                [asdict(item) for item in end.pending_interrupts],
            )
            await connection.execute(
                "UPDATE runs SET status = $3, outcome = $4, error_code = $5, error_message = $6,"
                " input_tokens = $7, output_tokens = $8, usage = $9, last_seq = $10,"
                " finished_at = now() WHERE thread_id = $1 AND run_id = $2",
                end.thread_id,
                end.run_id,
                end.status.value,
                end.outcome,
                end.error_code,
                end.error_message,
                input_tokens,
                output_tokens,
                end.usage or None,
                end.last_seq,
            )

    async def get_run(self, thread_id: str, run_id: str) -> RunRecord | None:
        async with db_errors():
            row = await self._pool.fetchrow(
                f"SELECT {_RUN_COLUMNS} FROM runs WHERE thread_id = $1 AND run_id = $2",
                thread_id,
                run_id,
            )
        return None if row is None else _run_record(row)

    async def find_runs(self, run_id: str, limit: int) -> list[RunRecord]:
        async with db_errors():  # the runs_run_id index
            rows = await self._pool.fetch(
                f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_id = $1 ORDER BY thread_id LIMIT $2",
                run_id,
                limit,
            )
        return [_run_record(row) for row in rows]

    async def list_runs(
        self, query: RunQuery, limit: int, before: RunCursor | None = None
    ) -> list[RunRecord]:
        # Only the filters given become conditions, so each combination gets the plan (and
        # the index) that suits it, rather than one generic plan for all.
        where = _Conditions()
        if query.statuses:
            where.add("status = ANY({}::text[])", sorted(status.value for status in query.statuses))
        if query.owner is not None:
            where.add("owner = {}", query.owner)
        if query.thread_id is not None:
            where.add("thread_id = {}", query.thread_id)
        if query.error_code is not None:
            where.add("error_code = {}", query.error_code)
        if query.since is not None:
            where.add("started_at >= {}", query.since)
        if query.until is not None:
            where.add("started_at < {}", query.until)
        if before is not None:
            where.add("(started_at, thread_id, run_id) < ({}, {}, {})", *before)
        async with db_errors():
            rows = await self._pool.fetch(
                f"SELECT {_RUN_COLUMNS} FROM runs {where.sql()}"
                f" ORDER BY started_at DESC, thread_id DESC, run_id DESC"
                f" LIMIT {where.placeholder(limit)}",
                *where.args,
            )
        return [_run_record(row) for row in rows]

    async def read_events(self, thread_id: str, run_id: str, after_seq: int) -> list[bytes]:
        return [event for _, event in await self._events_after(thread_id, run_id, after_seq)]

    async def event_page(
        self, thread_id: str, run_id: str, after_seq: int, limit: int
    ) -> list[tuple[int, bytes]]:
        return await self._events_after(thread_id, run_id, after_seq, limit)

    async def _events_after(
        self, thread_id: str, run_id: str, after_seq: int, limit: int | None = None
    ) -> list[tuple[int, bytes]]:
        # A row holds one event at least, so ``limit`` rows hold ``limit`` events or more.
        async with db_errors():
            rows = await self._pool.fetch(
                "SELECT seq_from, events FROM run_events"
                " WHERE thread_id = $1 AND run_id = $2 AND seq_to > $3 ORDER BY seq_from"
                " LIMIT $4",
                thread_id,
                run_id,
                after_seq,
                limit,
            )
        found: list[tuple[int, bytes]] = []
        for row in rows:
            numbered = enumerate(bytes(row["events"]).split(b"\n"), row["seq_from"])
            found += [(seq, event) for seq, event in numbered if seq > after_seq]
        return found if limit is None else found[:limit]


class _Conditions:
    """A WHERE clause built from the conditions given, each value a query parameter."""

    def __init__(self) -> None:
        self.args: list[Any] = []
        self._conditions: list[str] = []

    def placeholder(self, value: Any) -> str:
        self.args.append(value)
        return f"${len(self.args)}"

    def add(self, condition: str, *values: Any) -> None:
        """``condition`` with a ``{}`` where each of ``values`` goes."""
        self._conditions.append(condition.format(*map(self.placeholder, values)))

    def sql(self) -> str:
        return "WHERE " + " AND ".join(self._conditions) if self._conditions else ""


def _run_record(row: asyncpg.Record) -> RunRecord:
    """A row of :data:`_RUN_COLUMNS` (named as the record's fields)."""
    fields = dict(row)
    fields["status"] = RunStatus(fields["status"])
    if fields["worker_id"] is not None:
        fields["worker_id"] = str(fields["worker_id"])
    return RunRecord(**fields)


def _is_dead(worker: asyncpg.Record, me: uuid.UUID) -> bool:
    if worker["id"] == me:
        return False
    if worker["host"] != socket.gethostname():
        return bool(worker["silent"])
    try:  # same host: the process itself tells, no need to wait out a lease
        process = psutil.Process(worker["pid"])
        return process.create_time() > worker["started_at"].timestamp() + 1
    except psutil.NoSuchProcess:
        return True


async def _append_messages(
    connection: asyncpg.Connection, thread_id: str, messages: list[Message]
) -> None:
    if not messages:
        return
    count = await connection.fetchval(
        "UPDATE threads SET message_count = message_count + $2, updated_at = now()"
        " WHERE id = $1 RETURNING message_count - $2",
        thread_id,
        len(messages),
    )
    await connection.execute(
        "INSERT INTO messages (thread_id, position, message_id, role, body)"
        " SELECT $1, position, message_id, role, body"
        " FROM unnest($2::int[], $3::text[], $4::text[], $5::jsonb[])"
        "   AS new(position, message_id, role, body)",
        thread_id,
        list(range(count, count + len(messages))),
        [message["id"] for message in messages],
        [message["role"] for message in messages],
        messages,
    )


async def _insert_events(connection: asyncpg.Connection, batches: list[EventBatch]) -> None:
    # Idempotent: a batch retried after a lost acknowledgement is not written twice; and the
    # events of a run deleted meanwhile (with its thread) are skipped, not an error that
    # would fail the other runs' batches.
    await connection.executemany(
        "INSERT INTO run_events (thread_id, run_id, seq_from, seq_to, events)"
        " SELECT $1, $2, $3, $4, $5"
        " WHERE EXISTS (SELECT 1 FROM runs WHERE thread_id = $1 AND run_id = $2)"
        " ON CONFLICT DO NOTHING",
        [
            (
                batch.thread_id,
                batch.run_id,
                batch.seq_from,
                batch.seq_from + len(batch.events) - 1,
                b"\n".join(batch.events),
            )
            for batch in batches
            if batch.events
        ],
    )
