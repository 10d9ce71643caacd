"""Run history for administrators (list_runs, find_runs, event_page): the Postgres and the
in-memory thread stores, with the same assertions."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from agent_server.store.base import (
    Actor,
    EventBatch,
    RunEnd,
    RunQuery,
    RunRecord,
    RunStart,
    RunStatus,
    ThreadStore,
    run_key,
)
from agent_server.store.memory import MemoryThreadStore
from agent_server.store.postgres_threads import PostgresThreadStore
from tests.support.database import isolated_database_url, migrated_pool

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
USAGE = [
    {"inputTokens": 10, "outputTokens": 4, "totalTokens": 14},
    {"inputTokens": 5, "outputTokens": 1, "totalTokens": 6},
]


@dataclass
class Runs:
    store: ThreadStore
    # Sets a run's start time, so tests choose the order (and ties) instead of the clock.
    restamp: Callable[[str, str, datetime], Awaitable[None]]


@pytest.fixture(params=["memory", "postgres"])
async def runs(request: pytest.FixtureRequest) -> AsyncIterator[Runs]:
    if request.param == "memory":
        memory = MemoryThreadStore()

        async def restamp_in_memory(thread_id: str, run_id: str, at: datetime) -> None:
            key = (thread_id, run_id)
            memory._runs[key] = dataclasses.replace(memory._runs[key], started_at=at)

        yield Runs(memory, restamp_in_memory)
        return
    async with isolated_database_url() as url, migrated_pool(url) as pool:
        store = PostgresThreadStore(pool, event_retention=3600)
        await store.start()

        async def restamp_in_postgres(thread_id: str, run_id: str, at: datetime) -> None:
            await pool.execute(
                "UPDATE runs SET started_at = $3 WHERE thread_id = $1 AND run_id = $2",
                thread_id,
                run_id,
                at,
            )

        try:
            yield Runs(store, restamp_in_postgres)
        finally:
            await store.close()


def start(thread_id: str, run_id: str, owner: str = "alice") -> RunStart:
    message = {"id": f"m-{uuid.uuid4().hex[:8]}", "role": "user", "content": "hi"}
    return RunStart(thread_id, run_id, owner, "", [message], protocol_version="0.0.40")


def end(thread_id: str, run_id: str, status: RunStatus = RunStatus.SUCCEEDED, **fields) -> RunEnd:
    outcome = {
        RunStatus.SUCCEEDED: "success",
        RunStatus.INTERRUPTED: "interrupt",
        RunStatus.CANCELLED: "cancelled",
    }.get(status)
    values = {
        "outcome": outcome,
        "error_code": None,
        "error_message": None,
        "new_messages": [],
        "state": None,
        "pending_interrupts": [],
        "usage": USAGE,
        "last_seq": 3,
        "events": None,
    }
    return RunEnd(thread_id, run_id, status, **(values | fields))


async def ran(
    runs: Runs,
    thread_id: str,
    run_id: str,
    owner: str,
    status: RunStatus | None,  # None: still running
    at: datetime,
    error_code: str | None = None,
) -> None:
    await runs.store.start_run(start(thread_id, run_id, owner))
    if status is not None:
        message = f"{error_code} happened" if error_code else None
        await runs.store.finish_run(
            end(thread_id, run_id, status, error_code=error_code, error_message=message)
        )
    await runs.restamp(thread_id, run_id, at)


def ids(found: list[RunRecord]) -> list[str]:
    return [f"{run.thread_id}/{run.run_id}" for run in found]


async def test_a_run_is_recorded_from_start_to_finish(runs: Runs):
    store = runs.store
    before = datetime.now(UTC) - timedelta(seconds=1)
    await store.start_run(start("t", "ok"))
    running = await store.get_run("t", "ok")
    assert running is not None
    assert (running.owner, running.status, running.protocol_version) == (
        "alice",
        RunStatus.RUNNING,
        "0.0.40",
    )
    assert before <= running.started_at <= datetime.now(UTC) + timedelta(seconds=1)
    assert running.worker_id  # the process running it
    assert running.finished_at is None and running.duration_ms is None
    assert running.outcome is None and running.input_tokens is None and running.usage is None

    await store.finish_run(end("t", "ok"))
    done = await store.get_run("t", "ok")
    assert done is not None
    assert (done.status, done.outcome, done.last_seq) == (RunStatus.SUCCEEDED, "success", 3)
    assert (done.input_tokens, done.output_tokens, done.usage) == (15, 5, USAGE)
    assert done.started_at == running.started_at and done.finished_at >= done.started_at
    assert done.duration_ms == (done.finished_at - done.started_at) // timedelta(milliseconds=1)
    assert done.error_code is None and done.error_message is None

    await store.start_run(start("t", "bad"))
    await store.finish_run(
        end(
            "t",
            "bad",
            RunStatus.FAILED,
            error_code="model_error",
            error_message="out of memory",
            usage=[],
        )
    )
    failed = await store.get_run("t", "bad")
    assert failed is not None
    assert (failed.status, failed.outcome) == (RunStatus.FAILED, None)
    assert (failed.error_code, failed.error_message) == ("model_error", "out of memory")
    assert (failed.input_tokens, failed.output_tokens, failed.usage) == (None, None, None)
    # The listing holds the same records, newest first.
    assert await store.list_runs(RunQuery(), 10) == [failed, done]


async def test_runs_of_every_owner_are_listed_newest_first_and_filtered(runs: Runs):
    minute = timedelta(minutes=1)
    await ran(runs, "t1", "r1", "alice", RunStatus.SUCCEEDED, T0)
    await ran(runs, "t1", "r2", "alice", RunStatus.FAILED, T0 + minute, "model_error")
    await ran(runs, "t2", "r1", "bob", RunStatus.FAILED, T0 + 2 * minute, "timeout")
    await ran(runs, "t3", "r1", "carol", RunStatus.INTERRUPTED, T0 + 3 * minute)
    await ran(runs, "t4", "r9", "bob", None, T0 + 4 * minute)
    await ran(runs, "t5", "r1", "alice", RunStatus.CANCELLED, T0 + 5 * minute)

    async def listed(**query) -> list[str]:
        return ids(await runs.store.list_runs(RunQuery(**query), 100))

    assert await listed() == ["t5/r1", "t4/r9", "t3/r1", "t2/r1", "t1/r2", "t1/r1"]
    assert await listed(statuses=frozenset({RunStatus.FAILED})) == ["t2/r1", "t1/r2"]
    assert await listed(statuses=frozenset({RunStatus.FAILED, RunStatus.RUNNING})) == [
        "t4/r9",
        "t2/r1",
        "t1/r2",
    ]
    assert await listed(owner="bob") == ["t4/r9", "t2/r1"]
    assert await listed(thread_id="t1") == ["t1/r2", "t1/r1"]
    assert await listed(error_code="model_error") == ["t1/r2"]
    # since is inclusive, until exclusive
    assert await listed(since=T0 + minute, until=T0 + 4 * minute) == ["t3/r1", "t2/r1", "t1/r2"]
    assert await listed(since=T0 + 5 * minute) == ["t5/r1"]
    assert await listed(until=T0 + minute) == ["t1/r1"]
    assert await listed(owner="alice", statuses=frozenset({RunStatus.FAILED})) == ["t1/r2"]
    assert await listed(owner="alice", thread_id="t2") == []
    assert await listed(owner="nobody") == []
    assert ids(await runs.store.list_runs(RunQuery(), 2)) == ["t5/r1", "t4/r9"]


async def test_pages_cover_every_run_once_even_when_start_times_tie(runs: Runs):
    for number in range(12):
        owner = "alice" if number % 3 else "bob"
        # Three runs start at each instant: the thread and run ids break the ties.
        at = T0 + timedelta(seconds=number // 3)
        await ran(runs, f"t{number % 5}", f"r{number:02d}", owner, RunStatus.SUCCEEDED, at)
    everything = await runs.store.list_runs(RunQuery(), 100)
    assert len(everything) == 12
    assert everything == sorted(everything, key=run_key, reverse=True)

    for query in (RunQuery(), RunQuery(owner="alice")):
        expected = [run for run in everything if query.matches(run)]
        pages: list[list[RunRecord]] = []
        before = None
        while not pages or len(pages[-1]) == 5:
            pages.append(await runs.store.list_runs(query, 5, before))
            before = run_key(pages[-1][-1]) if pages[-1] else None
        walked = [run for page in pages for run in page]
        assert ids(walked) == ids(expected), query  # no run twice, none left out, in order
    assert [len(page) for page in pages] == [5, 3]


async def test_a_run_id_is_found_on_every_thread_that_has_it(runs: Runs):
    for thread_id in ("t3", "t1", "t2"):
        await runs.store.start_run(start(thread_id, "shared", owner=f"owner-{thread_id}"))
    await runs.store.start_run(start("t1", "other"))
    found = await runs.store.find_runs("shared", 10)
    assert ids(found) == ["t1/shared", "t2/shared", "t3/shared"]
    assert found[0] == await runs.store.get_run("t1", "shared")
    assert ids(await runs.store.find_runs("shared", 2)) == ["t1/shared", "t2/shared"]
    assert await runs.store.find_runs("nope", 10) == []


async def test_event_pages_are_numbered_in_order_and_bounded(runs: Runs):
    store = runs.store
    await store.start_run(start("t", "r"))
    events = [orjson.dumps({"type": "X", "n": n}) for n in range(1, 11)]
    await store.append_events(
        [EventBatch("t", "r", 1, events[:4]), EventBatch("t", "r", 5, events[4:7])]
    )
    await store.finish_run(end("t", "r", events=EventBatch("t", "r", 8, events[7:]), last_seq=10))

    def numbered(first: int, last: int) -> list[tuple[int, bytes]]:
        return [(seq, events[seq - 1]) for seq in range(first, last + 1)]

    assert await store.event_page("t", "r", 0, 100) == numbered(1, 10)
    assert await store.event_page("t", "r", 0, 4) == numbered(1, 4)
    assert await store.event_page("t", "r", 3, 3) == numbered(4, 6)  # across batches
    assert await store.event_page("t", "r", 8, 10) == numbered(9, 10)
    assert await store.event_page("t", "r", 10, 10) == []
    assert await store.event_page("t", "nope", 0, 10) == []
    assert await store.read_events("t", "r", 5) == events[5:]


async def test_a_resumed_run_keeps_its_start_and_is_running_again(runs: Runs):
    store = runs.store
    await store.start_run(start("t", "r"))
    await store.finish_run(end("t", "r", RunStatus.INTERRUPTED))
    interrupted = await store.get_run("t", "r")
    await store.start_run(start("t", "r"))  # the answer to the interrupt, with the same id
    resumed = await store.get_run("t", "r")
    assert interrupted is not None and resumed is not None
    assert resumed.status is RunStatus.RUNNING and resumed.started_at == interrupted.started_at
    assert resumed.outcome is None and resumed.finished_at is None
    assert resumed.last_seq == 3 and resumed.input_tokens == 15  # until the run ends again
    await store.finish_run(end("t", "r", usage=USAGE[:1], last_seq=7))
    again = await store.get_run("t", "r")
    assert again is not None
    assert (again.status, again.last_seq, again.input_tokens) == (RunStatus.SUCCEEDED, 7, 10)
    assert await store.list_runs(RunQuery(), 10) == [again]


async def test_a_deleted_thread_takes_its_runs_out_of_the_history(runs: Runs):
    await runs.store.start_run(start("kept", "r"))
    await runs.store.start_run(start("gone", "r"))
    assert await runs.store.delete_thread("gone", "alice", Actor("alice"))
    assert ids(await runs.store.list_runs(RunQuery(), 10)) == ["kept/r"]
    assert ids(await runs.store.find_runs("r", 10)) == ["kept/r"]
    assert await runs.store.get_run("gone", "r") is None
