"""SIGKILL the server in the middle of a run, start it again: nothing committed is lost, the
interrupted run is marked failed, and the thread goes on."""

from __future__ import annotations

import functools
import signal
from pathlib import Path

import asyncpg
import httpx
import orjson

from protocol.framing import SSEDecoder, parse_sse
from protocol.verifier import verify_events
from tests.doubles.ollama import DEFAULT_MODEL, OllamaDouble, ScriptedReply, text_reply
from tests.support.agui import new_id, run_input, stream, types
from tests.support.database import isolated_database_url
from tests.support.processes import citadel_process, clean_env
from tests.support.waiting import eventually


async def stored_through(database: str, thread_id: str, run_id: str, seq: int) -> bool:
    """Whether the run's events up to ``seq`` are in the store."""
    connection = await asyncpg.connect(database)
    try:
        last = await connection.fetchval(
            "SELECT max(seq_to) FROM run_events WHERE thread_id = $1 AND run_id = $2",
            thread_id,
            run_id,
        )
    finally:
        await connection.close()
    return last is not None and last >= seq


async def test_sigkill_mid_run_then_restart(tmp_path: Path):
    thread_id = new_id("thread")
    async with isolated_database_url() as database, OllamaDouble() as ollama:
        env = clean_env(
            DATABASE_URL=database,
            CITADEL_DATA_DIR=str(tmp_path),
            CITADEL_LLM="ollama",
            CITADEL_LLM_URL=ollama.url,
            CITADEL_LLM_MODEL=DEFAULT_MODEL,
            CITADEL_EVENT_FLUSH_INTERVAL="0.05",
        )
        ollama.enqueue(
            ScriptedReply(text_reply("Committed answer.")),
            ScriptedReply(
                text_reply("This answer is cut short by a crash", chunks=6)[:3], hang=True
            ),
            ScriptedReply(text_reply("Back again.")),
        )
        async with httpx.AsyncClient() as client:
            async with citadel_process(env) as (process, url):
                await stream(client, f"{url}/agui", run_input(thread_id, "run-1", "First question"))
                decoder, received = SSEDecoder(), []
                async with client.stream(
                    "POST", f"{url}/agui", json=run_input(thread_id, "run-2", "Second question")
                ) as response:
                    async for chunk in response.aiter_bytes():
                        received += decoder.feed(chunk)
                        if sum('"TEXT_MESSAGE_CONTENT"' in m.data for m in received) == 3:
                            seen = int(received[-1].id.rsplit(":", 1)[1])
                            # What the client has seen is in the store, then the crash.
                            stored = functools.partial(
                                stored_through, database, thread_id, "run-2", seen
                            )
                            await eventually(stored)
                            process.send_signal(signal.SIGKILL)
                            break
                await process.wait()

            async with citadel_process(env) as (_, url):
                hydrated = await client.post(f"{url}/agui/connect", json={"threadId": thread_id})
                replay = await client.post(
                    f"{url}/agui/connect",
                    json={"threadId": thread_id, "protocolVersion": "1.0"},
                    headers={"Last-Event-ID": "run-2:0"},
                )
                status, third = await stream(
                    client, f"{url}/agui", run_input(thread_id, "run-3", "Third question")
                )
        connection = await asyncpg.connect(database)
        try:
            runs = await connection.fetch(
                "SELECT run_id, status, error_code FROM runs ORDER BY started_at"
            )
        finally:
            await connection.close()

    messages = next(
        orjson.loads(m.data)["messages"]
        for m in parse_sse(hydrated.content)
        if '"MESSAGES_SNAPSHOT"' in m.data
    )
    # Every committed message: run 1 in full, run 2's question (stored before its first byte).
    assert [(m["role"], m["content"]) for m in messages] == [
        ("user", "First question"),
        ("assistant", "Committed answer."),
        ("user", "Second question"),
    ]
    assert [tuple(row) for row in runs] == [
        ("run-1", "succeeded", None),
        ("run-2", "failed", "interrupted"),
        ("run-3", "succeeded", None),
    ]
    # The crashed run's stored events replay as a stream that still ends, with RUN_ERROR.
    replayed = [orjson.loads(m.data) for m in parse_sse(replay.content)]
    assert types(replayed)[0] == "RUN_STARTED" and types(replayed)[-1] == "RUN_ERROR"
    assert "TEXT_MESSAGE_CONTENT" in types(replayed)
    assert verify_events(replayed) == []
    assert status == 200 and types(third)[-1] == "RUN_FINISHED"
