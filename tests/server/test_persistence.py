"""Threads, runs and events survive restarts; database trouble never breaks a stream."""

from __future__ import annotations

import asyncio

import asyncpg
import httpx
import orjson

from protocol.framing import parse_sse
from protocol.verifier import verify_events
from tests.conftest import citadel, double_model
from tests.doubles.ollama import ScriptedReply, text_reply, tool_call_reply
from tests.support.agui import new_id, stream, types, user
from tests.support.database import isolated_database_url
from tests.support.proxy import proxied_postgres
from tests.support.waiting import eventually


def body(thread_id: str, text: str = "Hi", **fields) -> dict:
    return {
        "threadId": thread_id,
        "runId": new_id("run"),
        "protocolVersion": "1.0",
        "messages": [user(text)],
        **fields,
    }


async def connect(client: httpx.AsyncClient, url: str, thread_id: str, **headers) -> list[dict]:
    response = await client.post(
        f"{url}/agui/connect",
        json={"threadId": thread_id, "protocolVersion": "1.0"},
        headers=headers,
    )
    assert response.status_code == 200, response.text
    return [orjson.loads(message.data) for message in parse_sse(response.content)]


async def test_a_thread_and_its_run_survive_a_restart(ollama):
    ollama.enqueue(ScriptedReply(text_reply("Remembered.", chunks=4)))
    thread_id = new_id("thread")
    async with isolated_database_url() as database, httpx.AsyncClient() as client:
        async with citadel(double_model(ollama), database_url=database) as url:
            first = body(thread_id, "Remember this", state={"color": "blue"})
            _, original = await stream(client, f"{url}/agui", first)
        async with citadel(double_model(ollama), database_url=database) as url:
            hydrated = await connect(client, url, thread_id)
            # Replayed from the store: the new process never had this run in memory.
            replay = await connect(
                client, url, thread_id, **{"Last-Event-ID": f"{first['runId']}:2"}
            )
            status, after = await stream(client, f"{url}/agui", body(thread_id, "Still there?"))
    snapshot, state = hydrated[1], hydrated[2]
    assert [(m["role"], m["content"]) for m in snapshot["messages"]] == [
        ("user", "Remember this"),
        ("assistant", "Remembered."),
    ]
    assert state["snapshot"] == {"color": "blue"}
    assert replay == original[2:]  # exactly what came after event 2, byte for byte
    assert status == 200 and types(after)[-1] == "RUN_FINISHED"
    assert [m["content"] for m in ollama.requests[-1]["messages"][1:]] == [
        "Remember this",
        "Remembered.",
        "Still there?",
    ]


async def test_an_approval_waits_across_a_restart(ollama):
    ollama.enqueue(
        ScriptedReply(tool_call_reply([("calculate", {"expression": "3*3"})])),
        ScriptedReply(text_reply("Nine.")),
    )
    thread_id = new_id("thread")
    async with isolated_database_url() as database, httpx.AsyncClient() as client:
        settings = {"database_url": database, "approval_tools": ["calculate"]}
        async with citadel(double_model(ollama), **settings) as url:
            first = body(thread_id, "3*3?")
            _, interrupted = await stream(client, f"{url}/agui", first)
        [interrupt] = interrupted[-1]["outcome"]["interrupts"]
        async with citadel(double_model(ollama), **settings) as url:
            hydrated = await connect(client, url, thread_id)
            resume = {
                **first,
                "messages": [],
                "resume": [{"interruptId": interrupt["id"], "status": "resolved"}],
            }
            async with client.stream("POST", f"{url}/agui", json=resume) as response:
                raw = await response.aread()
    assert hydrated[-1]["outcome"]["interrupts"][0]["id"] == interrupt["id"]
    resumed = parse_sse(raw)
    # The resumed run continues the interrupted run's numbering, so ids stay unique.
    assert resumed[0].id == f"{first['runId']}:{len(interrupted) + 1}"
    result = next(orjson.loads(m.data) for m in resumed if '"TOOL_CALL_RESULT"' in m.data)
    assert orjson.loads(result["content"])["result"] == 9


async def test_database_down_at_run_start_is_503_and_changes_nothing(ollama):
    thread_id = new_id("thread")
    async with (
        isolated_database_url() as database,
        proxied_postgres(database) as (proxy, via),
        citadel(double_model(ollama), database_url=via) as url,
        httpx.AsyncClient() as client,
    ):
        proxy.cut()
        refused = await client.post(f"{url}/agui", json=body(thread_id))
        proxy.restore()
        missing = await client.post(f"{url}/agui/connect", json={"threadId": thread_id})
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "storage_unavailable"
    assert refused.headers["retry-after"] == "5"
    assert missing.status_code == 404 and not ollama.requests


async def test_a_database_hiccup_mid_run_does_not_break_the_stream(ollama):
    ollama.enqueue(ScriptedReply(text_reply("slow and steady " * 5, chunks=20), delay=0.05))
    thread_id = new_id("thread")
    async with isolated_database_url() as database, proxied_postgres(database) as (proxy, via):
        settings = {"database_url": via, "event_flush_interval": 0.05}
        async with citadel(double_model(ollama), **settings) as url, httpx.AsyncClient() as client:
            running = asyncio.create_task(stream(client, f"{url}/agui", body(thread_id)))
            await ollama.wait_for_requests()
            proxy.cut()
            await asyncio.sleep(0.4)
            proxy.restore()
            _, events = await running
        stored = await _stored(database, thread_id)
    assert types(events)[-1] == "RUN_FINISHED" and verify_events(events) == []
    # Every event reached the store once, despite the outage.
    assert stored["events"] == len(events) and stored["status"] == "succeeded"


async def test_database_down_at_run_end_fails_the_run_clearly_then_recovers(ollama):
    ollama.enqueue(
        ScriptedReply(text_reply("almost done", chunks=3), delay=0.3),
        ScriptedReply(text_reply("After the outage.")),
    )
    thread_id = new_id("thread")
    async with isolated_database_url() as database, proxied_postgres(database) as (proxy, via):
        settings = {"database_url": via, "db_write_timeout": 0.5}
        async with citadel(double_model(ollama), **settings) as url, httpx.AsyncClient() as client:
            running = asyncio.create_task(stream(client, f"{url}/agui", body(thread_id)))
            await ollama.wait_for_requests()
            proxy.cut()
            _, events = await running
            busy = await client.post(f"{url}/agui", json=body(thread_id, "again"))
            not_ready = await client.get(f"{url}/ready", timeout=30)
            proxy.restore()
            # The background retry stores the run's end.
            await eventually(lambda: _status_is_not(database, thread_id, "running"))
            ready = await client.get(f"{url}/ready")
            status, after = await stream(client, f"{url}/agui", body(thread_id, "again"))
    assert events[-1]["type"] == "RUN_ERROR" and events[-1]["code"] == "storage_unavailable"
    assert busy.status_code == 409  # the thread waits for its history to be stored
    assert not_ready.status_code == 503, not_ready.text
    checks = not_ready.json()["checks"]
    assert checks["store"]["status"] == "error" and checks["model"]["status"] == "ok"
    assert ready.status_code == 200 and ready.json()["checks"]["store"]["status"] == "ok"
    assert status == 200 and types(after)[-1] == "RUN_FINISHED"


async def _status_is_not(database: str, thread_id: str, status: str) -> bool:
    return (await _stored(database, thread_id))["status"] != status


async def _stored(database: str, thread_id: str) -> dict:
    connection = await asyncpg.connect(database)
    try:
        row = await connection.fetchrow(
            "SELECT status, last_seq,"
            " (SELECT coalesce(sum(seq_to - seq_from + 1), 0) FROM run_events e"
            "  WHERE e.thread_id = r.thread_id AND e.run_id = r.run_id) AS events"
            " FROM runs r WHERE thread_id = $1",
            thread_id,
        )
        return dict(row)
    finally:
        await connection.close()
