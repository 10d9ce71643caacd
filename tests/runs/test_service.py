"""The run API in process, as a face other than HTTP uses it: start, follow, resume, hydrate,
stop, observe. On the real Postgres, with the real Ollama backend talking to the Ollama
test double."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import AsyncIterator
from typing import Any

import pytest

from agent_server.config import Settings
from agent_server.runs.eventlog import Batch
from agent_server.runs.service import RunStream
from agent_server.services import Services, start_services
from protocol.errors import Refusal
from protocol.input import parse_run_input
from protocol.verifier import verify_events
from protocol.versions import WireVersion
from tests.conftest import double_model
from tests.doubles.ollama import OllamaDouble, ScriptedReply, text_reply
from tests.support.agui import new_id, run_input, user
from tests.support.database import isolated_database_url

V1 = WireVersion.V1


@contextlib.asynccontextmanager
async def running(ollama: OllamaDouble, **overrides: Any) -> AsyncIterator[Services]:
    async with isolated_database_url() as database:
        with tempfile.TemporaryDirectory() as data_dir:
            settings = Settings(
                database_url=database,
                data_dir=data_dir,
                retrieval="off",
                demo_docs=None,
                keepalive_interval=overrides.pop("keepalive_interval", 15.0),
                **overrides,
            )
            services = await start_services(settings, double_model(ollama))
            try:
                yield services
            finally:
                await services.aclose()


async def collect(stream: RunStream) -> list[Batch]:
    return [batch async for batch in stream]


def events(batches: list[Batch]) -> list[dict[str, Any]]:
    return [event.event for batch in batches for event in batch.events]


def types(batches: list[Batch]) -> list[str]:
    return [event["type"] for event in events(batches)]


def start(thread_id: str, text: str = "Hi", **fields: Any):
    return parse_run_input({**run_input(thread_id, new_id("run"), text), **fields})


async def test_a_started_run_is_followed_from_its_first_event_with_contiguous_numbers(ollama):
    ollama.enqueue(ScriptedReply(text_reply("Hello there", chunks=4)))
    async with running(ollama) as services:
        stream = await services.runs.start("alice", start(new_id("thread")))
        batches = await collect(stream)
    numbered = [event.seq for batch in batches for event in batch.events]
    assert numbered == list(range(1, len(numbered) + 1))
    assert {batch.run_id for batch in batches} == {stream.run_id}
    assert verify_events(events(batches), V1) == []
    text = "".join(e["delta"] for e in events(batches) if e["type"] == "TEXT_MESSAGE_CONTENT")
    assert text == "Hello there"


async def test_resume_gives_exactly_the_events_after_a_sequence_number(ollama):
    ollama.enqueue(ScriptedReply(text_reply("one two three", chunks=3)))
    async with running(ollama) as services:
        thread_id = new_id("thread")
        stream = await services.runs.start("alice", start(thread_id))
        whole = await collect(stream)
        assert stream.run_id is not None
        resumed = await services.runs.resume("alice", thread_id, stream.run_id, 3, V1)
        tail = await collect(resumed)
        with pytest.raises(Refusal) as other_owner:
            await services.runs.resume("mallory", thread_id, stream.run_id, 0, V1)
    all_events = [event for batch in whole for event in batch.events]
    assert [event for batch in tail for event in batch.events] == all_events[3:]
    assert other_owner.value.code == "run_not_found"


async def test_hydrating_a_finished_thread_is_a_complete_unnumbered_run_and_nothing_live(ollama):
    ollama.enqueue(ScriptedReply(text_reply("stored answer")))
    async with running(ollama) as services:
        thread_id = new_id("thread")
        await collect(await services.runs.start("alice", start(thread_id, "question")))
        hydrated = await services.runs.hydrate("alice", thread_id, V1)
        refusals = []
        for owner, thread in (("mallory", thread_id), ("alice", new_id("thread"))):
            with pytest.raises(Refusal) as refused:
                await services.runs.hydrate(owner, thread, V1)
            refusals.append(refused.value.code)
    assert hydrated.live is None
    assert types(hydrated.ready) == [
        "RUN_STARTED",
        "MESSAGES_SNAPSHOT",
        "STATE_SNAPSHOT",
        "RUN_FINISHED",
    ]
    assert all(event.seq is None for event in hydrated.ready[0].events)
    [snapshot] = [e for e in events(hydrated.ready) if e["type"] == "MESSAGES_SNAPSHOT"]
    assert [m["content"] for m in snapshot["messages"]] == ["question", "stored answer"]
    assert refusals == ["thread_not_found", "thread_not_found"]


async def test_hydrating_during_a_run_carries_the_history_then_the_run_live(ollama):
    ollama.enqueue(ScriptedReply(text_reply("first")))
    ollama.enqueue(ScriptedReply(text_reply("slow second answer", chunks=3), delay=0.2))
    async with running(ollama) as services:
        thread_id = new_id("thread")
        await collect(await services.runs.start("alice", start(thread_id, "q1")))
        second = await services.runs.start("alice", start(thread_id, "q2"))
        joined = await services.runs.hydrate("alice", thread_id, V1)
        original, hydrated = await asyncio.gather(collect(second), collect(joined))
    assert joined.live is not None and joined.run_id == second.run_id
    [snapshot] = [e for e in events(joined.ready) if e["type"] == "MESSAGES_SNAPSHOT"]
    assert [m["content"] for m in snapshot["messages"]] == ["q1", "first", "q2"]
    live = [batch for batch in hydrated if batch.run_id == second.run_id]
    assert events(live) == events(original)


async def test_stop_ends_the_followed_stream_with_the_cancelled_outcome(ollama):
    ollama.enqueue(ScriptedReply(text_reply("never finished"), hang=True))
    async with running(ollama) as services:
        thread_id = new_id("thread")
        stream = await services.runs.start("alice", start(thread_id))
        following = asyncio.create_task(collect(stream))
        await ollama.wait_for_requests(1)
        with pytest.raises(Refusal) as not_hers:
            await services.runs.stop("mallory", thread_id)
        stopped = await services.runs.stop("alice", thread_id)
        batches = await following
        with pytest.raises(Refusal) as nothing_left:
            await services.runs.stop("alice", thread_id)
    assert stopped == stream.run_id
    assert events(batches)[-1]["outcome"] == {"type": "cancelled"}
    assert not_hers.value.code == nothing_left.value.code == "no_active_run"


async def test_a_legacy_follower_gets_the_0059_shapes(ollama):
    ollama.enqueue(ScriptedReply(text_reply("x"), hang=True))
    async with running(ollama) as services:
        thread_id = new_id("thread")
        stream = await services.runs.start("alice", start(thread_id, protocolVersion=None))
        following = asyncio.create_task(collect(stream))
        await ollama.wait_for_requests(1)
        await services.runs.stop("alice", thread_id)
        batches = await following
    assert stream.version is WireVersion.LEGACY
    assert "outcome" not in events(batches)[-1]  # 0.0.59 has no "cancelled"
    assert verify_events(events(batches), WireVersion.LEGACY) == []


async def test_an_observer_sees_every_later_run_of_the_thread_and_quiet_ticks(ollama):
    ollama.enqueue(ScriptedReply(text_reply("first answer")))
    ollama.enqueue(ScriptedReply(text_reply("second answer")))
    async with running(ollama, keepalive_interval=0.05) as services:
        thread_id = new_id("thread")
        observed = await services.runs.observe("alice", thread_id, V1)
        assert observed.ready == []  # the thread does not exist yet
        seen: list[Batch] = []

        async def watch() -> None:  # until both runs and a quiet tick after them
            async for batch in observed:
                seen.append(batch)
                finished = sum(e["type"] == "RUN_FINISHED" for e in events(seen))
                if finished == 2 and not batch.events:
                    return

        watcher = asyncio.create_task(watch())
        runs = []
        for text in ("q1", "q2"):
            runs.append(await services.runs.start("alice", start(thread_id, text)))
            await collect(runs[-1])
        await watcher
        with pytest.raises(Refusal) as not_hers:
            await services.runs.observe("mallory", thread_id, V1)
    followed = [batch.run_id for batch in seen if batch.events]
    assert list(dict.fromkeys(followed)) == [run.run_id for run in runs]
    texts = [e["delta"] for e in events(seen) if e["type"] == "TEXT_MESSAGE_CONTENT"]
    assert "".join(texts) == "first answersecond answer"
    assert not_hers.value.code == "thread_not_found"


async def test_two_runs_on_one_thread_are_refused_as_busy(ollama):
    ollama.enqueue(ScriptedReply(text_reply("x"), hang=True))
    async with running(ollama) as services:
        thread_id = new_id("thread")
        first = await services.runs.start("alice", start(thread_id))
        with pytest.raises(Refusal) as busy:
            await services.runs.start("alice", start(thread_id, messages=[user("again")]))
        await services.runs.stop("alice", thread_id)
        await collect(first)
    assert busy.value.code == "thread_busy"
