"""The Postgres thread store, on the local server and on the embedded one."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import uuid
from collections.abc import AsyncIterator

import asyncpg
import orjson
import pytest

from agent_server.store.base import (
    Actor,
    EventBatch,
    PendingInterrupt,
    RunEnd,
    RunStart,
    RunStatus,
)
from agent_server.store.migrations import upgrade
from agent_server.store.postgres import open_pool
from agent_server.store.postgres_threads import PostgresThreadStore

ACTOR = Actor("alice", "127.0.0.1")


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await open_pool(
        database_url, min_size=1, max_size=4, statement_timeout=10, connect_timeout=5
    )
    await upgrade(pool)
    yield pool
    await pool.close()


@pytest.fixture
async def store(pool: asyncpg.Pool) -> AsyncIterator[PostgresThreadStore]:
    store = PostgresThreadStore(pool, event_retention=3600)
    await store.start()
    yield store
    await store.close()


def user(text: str) -> dict:
    return {"id": f"u-{uuid.uuid4().hex[:8]}", "role": "user", "content": text}


def assistant(text: str) -> dict:
    return {"id": f"a-{uuid.uuid4().hex[:8]}", "role": "assistant", "content": text}


def end(thread_id: str, run_id: str, messages: list[dict], **fields) -> RunEnd:
    values = {
        "status": RunStatus.SUCCEEDED,
        "outcome": "success",
        "error_code": None,
        "error_message": None,
        "new_messages": messages,
        "state": {"n": 1},
        "pending_interrupts": [],
        "usage": [{"inputTokens": 10, "outputTokens": 4, "totalTokens": 14}],
        "last_seq": 3,
        "events": EventBatch(thread_id, run_id, 1, [b'{"type":"RUN_STARTED"}', b"{}", b"{}"]),
    }
    return RunEnd(thread_id, run_id, **(values | fields))


async def test_a_run_round_trips_messages_state_and_interrupts(store):
    question, answer = user("What is 2+2?"), assistant("4")
    await store.start_run(RunStart("t1", "r1", "alice", "What is 2+2?", [question]))
    loaded = await store.load("t1")
    assert loaded.owner == "alice" and loaded.messages == [question] and loaded.state is None

    pending = PendingInterrupt("i1", "c1", "calculate", '{"expression":"2+2"}', "r1")
    await store.finish_run(
        end("t1", "r1", [answer], status=RunStatus.INTERRUPTED, pending_interrupts=[pending])
    )
    loaded = await store.load("t1")
    assert loaded.messages == [question, answer]
    assert loaded.state == {"n": 1} and loaded.pending_interrupts == [pending]
    run = await store.get_run("t1", "r1")
    assert (run.status, run.last_seq, run.owner) == (RunStatus.INTERRUPTED, 3, "alice")
    assert await store.load("nope") is None and await store.get_run("t1", "nope") is None


async def test_messages_keep_their_order_across_runs(store):
    history = []
    for number in range(3):
        question, answer = user(f"q{number}"), assistant(f"a{number}")
        await store.start_run(RunStart("t", f"r{number}", "alice", "", [question]))
        await store.finish_run(end("t", f"r{number}", [answer]))
        history += [question, answer]
    assert (await store.load("t")).messages == history


async def test_events_are_read_back_from_any_sequence_number(store):
    await store.start_run(RunStart("t", "r", "alice", "", [user("hi")]))
    events = [orjson.dumps({"type": "X", "n": n}) for n in range(1, 11)]
    await store.append_events(
        [EventBatch("t", "r", 1, events[:4]), EventBatch("t", "r", 5, events[4:7])]
    )
    await store.append_events([EventBatch("t", "r", 5, events[4:7])])  # a retried batch: no dupes
    await store.finish_run(
        end("t", "r", [], events=EventBatch("t", "r", 8, events[7:]), last_seq=10)
    )
    assert await store.read_events("t", "r", 0) == events
    assert await store.read_events("t", "r", 5) == events[5:]
    assert await store.read_events("t", "r", 10) == []


async def test_events_of_a_deleted_thread_do_not_fail_the_others(store):
    await store.start_run(RunStart("kept", "r", "alice", "", [user("hi")]))
    await store.start_run(RunStart("gone", "r", "alice", "", [user("hi")]))
    await store.delete_thread("gone", "alice", ACTOR)
    event = orjson.dumps({"type": "X"})
    await store.append_events(
        [EventBatch("gone", "r", 1, [event]), EventBatch("kept", "r", 1, [event])]
    )
    assert await store.read_events("kept", "r", 0) == [event]
    assert await store.read_events("gone", "r", 0) == []


async def test_listing_is_newest_first_paginated_and_per_owner(store):
    for number in range(5):
        await store.start_run(RunStart(f"t{number}", "r", "alice", f"title {number}", [user("x")]))
        await asyncio.sleep(0.002)  # distinct updated_at
    await store.start_run(RunStart("bobs", "r", "bob", "bob's", [user("x")]))
    first = await store.list_threads("alice", 2, None)
    assert [item.thread_id for item in first] == ["t4", "t3"]
    rest = await store.list_threads("alice", 10, (first[-1].updated_at, first[-1].thread_id))
    assert [item.thread_id for item in rest] == ["t2", "t1", "t0"]
    assert [item.thread_id for item in await store.list_threads("bob", 10, None)] == ["bobs"]


async def test_rename_and_delete_are_owner_only_and_audited(store, pool):
    await store.start_run(RunStart("t", "r", "alice", "old", [user("x")]))
    await store.append_events([EventBatch("t", "r", 1, [b"{}"])])
    assert not await store.rename_thread("t", "mallory", "mine", Actor("mallory"))
    assert await store.rename_thread("t", "alice", "new", ACTOR)
    assert (await store.load("t")).title == "new"
    assert not await store.delete_thread("t", "mallory", Actor("mallory"))
    assert await store.delete_thread("t", "alice", ACTOR)
    assert await store.load("t") is None
    remaining = await pool.fetchval(
        "SELECT (SELECT count(*) FROM messages) + (SELECT count(*) FROM runs)"
        " + (SELECT count(*) FROM run_events)"
    )
    assert remaining == 0
    audit = await pool.fetch(
        "SELECT actor, action, thread_id, remote_addr FROM audit_log ORDER BY id"
    )
    assert [tuple(row) for row in audit] == [
        ("alice", "thread.rename", "t", "127.0.0.1"),
        ("alice", "thread.delete", "t", "127.0.0.1"),
    ]


async def test_runs_of_a_dead_worker_are_marked_failed(pool, store):
    # A worker process that registers, starts a run and is killed with SIGKILL.
    dead = await asyncio.create_subprocess_exec(sys.executable, "-c", "import time; time.sleep(60)")
    await pool.execute(
        "INSERT INTO workers (id, host, pid) VALUES ($1, $2, $3)",
        uuid.UUID(int=1),
        socket.gethostname(),
        dead.pid,
    )
    await store.start_run(RunStart("t", "r", "alice", "", [user("x")]))
    await pool.execute("UPDATE runs SET worker_id = $1", uuid.UUID(int=1))
    assert await store.recover() == 0  # still alive
    os.kill(dead.pid, signal.SIGKILL)
    await dead.wait()
    assert await store.recover() == 1
    run = await store.get_run("t", "r")
    assert run.status is RunStatus.FAILED
    assert await pool.fetchval("SELECT error_code FROM runs") == "interrupted"


async def test_a_silent_worker_on_another_host_is_dead_after_its_lease(pool, store):
    await pool.execute(
        "INSERT INTO workers (id, host, pid, heartbeat_at) VALUES ($1, 'elsewhere', 1, now())",
        uuid.UUID(int=2),
    )
    await store.start_run(RunStart("t", "r", "alice", "", [user("x")]))
    await pool.execute("UPDATE runs SET worker_id = $1", uuid.UUID(int=2))
    assert await store.recover() == 0
    await pool.execute("UPDATE workers SET heartbeat_at = now() - interval '1 minute'")
    assert await store.recover() == 1
