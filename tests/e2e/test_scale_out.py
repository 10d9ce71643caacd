"""Two worker processes sharing the real Redis and Postgres: a run started on worker A is
resumed mid-stream on worker B with nothing lost or repeated, refused a second run from B,
stopped from B, and watched throughout from an admin feed connected to B."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import orjson
import pytest

from protocol.framing import SSEDecoder, SSEMessage
from protocol.verifier import verify_events
from tests.doubles.ollama import OllamaDouble, ScriptedReply, text_reply
from tests.support.agui import new_id, run_input, types
from tests.support.database import isolated_database_url
from tests.support.feed import admin_feed, ended, run_events
from tests.support.processes import two_workers
from tests.support.redis import empty_redis


@contextlib.asynccontextmanager
async def shared_workers(tmp_path: Path, ollama: OllamaDouble) -> AsyncIterator[tuple[str, str]]:
    async with (
        isolated_database_url() as database,
        empty_redis() as redis_url,
        two_workers(tmp_path, ollama.url, database, redis_url) as (a, b),
    ):
        yield a, b


async def read_until(
    chunks: AsyncIterator[bytes], decoder: SSEDecoder, done: int
) -> list[SSEMessage]:
    """Messages from ``chunks`` until ``done`` of them have come (the rest stays unread)."""
    received: list[SSEMessage] = []
    async for chunk in chunks:
        received += decoder.feed(chunk)
        if len(received) >= done:
            break
    return received


@pytest.mark.timeout(120)
async def test_a_run_on_a_resumes_on_b_stops_from_b_and_b_watches_it(tmp_path: Path):
    async with OllamaDouble() as ollama, shared_workers(tmp_path, ollama) as (a, b):
        async with admin_feed(b) as feed, httpx.AsyncClient(timeout=30) as client:
            # 1. A run on A, read halfway there, the connection dropped, resumed on B.
            ollama.enqueue(
                ScriptedReply(text_reply("one two three four five six", chunks=6), delay=0.15)
            )
            thread, run = new_id("thread"), new_id("run")
            decoder = SSEDecoder()
            async with client.stream("POST", f"{a}/agui", json=run_input(thread, run)) as response:
                first_part = await read_until(response.aiter_bytes(), decoder, 5)
            last_id = first_part[-1].id
            assert last_id == f"{run}:{len(first_part)}"
            resumed = await client.post(
                f"{b}/agui/connect",
                json={"threadId": thread, "protocolVersion": "1.0"},
                headers={"Last-Event-ID": last_id},
            )
            second_part = SSEDecoder().feed(resumed.content)
            whole = first_part + second_part
            assert [m.id for m in whole] == [f"{run}:{n}" for n in range(1, len(whole) + 1)]
            events = [orjson.loads(m.data) for m in whole]
            assert verify_events(events) == []
            assert types(events)[-1] == "RUN_FINISHED"
            text = "".join(e["delta"] for e in events if e["type"] == "TEXT_MESSAGE_CONTENT")
            assert text.split() == ["one", "two", "three", "four", "five", "six"]

            # 2. A run on A that waits for the model: B refuses a second run on its thread,
            # then stops it; A's stream ends cancelled.
            ollama.enqueue(ScriptedReply(text_reply("never finished", chunks=3)[:1], hang=True))
            run2 = new_id("run")
            decoder2 = SSEDecoder()
            async with client.stream("POST", f"{a}/agui", json=run_input(thread, run2)) as stopped:
                chunks = stopped.aiter_bytes()
                started = await read_until(chunks, decoder2, 4)
                assert "TEXT_MESSAGE_CONTENT" in types([orjson.loads(m.data) for m in started])
                busy = await client.post(f"{b}/agui", json=run_input(thread, new_id("run")))
                assert busy.status_code == 409
                assert busy.json()["error"]["code"] == "thread_busy"
                stop = await client.post(f"{b}/agui/stop", json={"threadId": thread})
                assert stop.status_code == 200, stop.text
                assert stop.json()["runId"] == run2
                rest = await read_until(chunks, decoder2, 1_000)
            stopped_events = [orjson.loads(m.data) for m in started + rest]
            assert verify_events(stopped_events) == []
            assert stopped_events[-1]["type"] == "RUN_FINISHED"
            assert stopped_events[-1]["outcome"] == {"type": "cancelled"}
            no_run = await client.post(f"{b}/agui/stop", json={"threadId": thread})
            assert no_run.status_code == 404

            # 3. The admin feed on B saw both runs of A, every event exactly once, in order.
            await feed.until(ended(run2))
        assert [i["event"] for i in run_events(feed.items, run)] == events
        assert [i["event"] for i in run_events(feed.items, run2)] == stopped_events
        workers = {i["worker"] for i in feed.items if i["kind"] == "run"}
        assert len(workers) == 1 and workers != {feed.items[0]["worker"]}  # produced on A


@pytest.mark.timeout(120)
async def test_hydrating_on_b_follows_the_live_run_of_a(tmp_path: Path):
    async with OllamaDouble() as ollama, shared_workers(tmp_path, ollama) as (a, b):
        answer = asyncio.Event()  # the model is silent until B has joined A's run
        ollama.enqueue(ScriptedReply(text_reply("slow and steady", chunks=4), gate=answer))
        thread, run = new_id("thread"), new_id("run")
        async with httpx.AsyncClient(timeout=30) as client:
            on_a = asyncio.create_task(client.post(f"{a}/agui", json=run_input(thread, run)))
            await ollama.wait_for_requests(1)
            body = {"threadId": thread, "protocolVersion": "1.0"}
            decoder, hydrated = SSEDecoder(), []
            try:
                async with client.stream("POST", f"{b}/agui/connect", json=body) as response:
                    async for chunk in response.aiter_bytes():
                        hydrated += decoder.feed(chunk)
                        if len(hydrated) >= 5:  # the hydration, then the live RUN_STARTED
                            answer.set()
            finally:
                answer.set()
            original = SSEDecoder().feed((await on_a).content)
        followed = [orjson.loads(m.data) for m in hydrated]
        # The hydration run, then the live run exactly as A sent it.
        assert types(followed)[:4] == [
            "RUN_STARTED",
            "MESSAGES_SNAPSHOT",
            "STATE_SNAPSHOT",
            "RUN_FINISHED",
        ]
        assert followed[4:] == [orjson.loads(m.data) for m in original]
