"""GET/PATCH/DELETE /threads: a user's conversations, newest first."""

from __future__ import annotations

import asyncio

import asyncpg
import httpx
import pytest

from tests.conftest import citadel, double_model
from tests.doubles.ollama import ScriptedReply, text_reply
from tests.support.agui import new_id, stream, user
from tests.support.database import isolated_database_url


def body(thread_id: str, text: str) -> dict:
    return {"threadId": thread_id, "runId": new_id("run"), "messages": [user(text)]}


async def test_list_paginates_newest_first_with_titles(ollama):
    async with citadel(double_model(ollama)) as url, httpx.AsyncClient() as client:
        for number in range(5):
            await stream(
                client, f"{url}/agui", body(f"thread-{number}", f"Question number {number}")
            )
        first = (await client.get(f"{url}/threads", params={"limit": 2})).json()
        second = (
            await client.get(f"{url}/threads", params={"limit": 2, "cursor": first["nextCursor"]})
        ).json()
        third = (
            await client.get(f"{url}/threads", params={"limit": 2, "cursor": second["nextCursor"]})
        ).json()
    ids = [item["id"] for page in (first, second, third) for item in page["threads"]]
    assert ids == ["thread-4", "thread-3", "thread-2", "thread-1", "thread-0"]
    assert first["threads"][0]["title"] == "Question number 4"
    assert first["threads"][0]["messageCount"] == 2
    assert "nextCursor" not in third


async def test_read_rename_and_delete_with_an_audit_trail(ollama):
    ollama.enqueue(ScriptedReply(text_reply("An answer.")))
    thread_id = new_id("thread")
    async with isolated_database_url() as database:
        async with (
            citadel(double_model(ollama), database_url=database) as url,
            httpx.AsyncClient() as client,
        ):
            await stream(client, f"{url}/agui", body(thread_id, "Keep me"))
            read = (await client.get(f"{url}/threads/{thread_id}")).json()
            renamed = await client.patch(f"{url}/threads/{thread_id}", json={"title": "Renamed"})
            listed = (await client.get(f"{url}/threads")).json()["threads"]
            deleted = await client.delete(f"{url}/threads/{thread_id}")
            gone = await client.get(f"{url}/threads/{thread_id}")
            again = await client.delete(f"{url}/threads/{thread_id}")
            replay = await client.post(f"{url}/agui/connect", json={"threadId": thread_id})
        connection = await asyncpg.connect(database)
        try:
            audit = await connection.fetch(
                "SELECT actor, action, thread_id FROM audit_log ORDER BY id"
            )
            leftovers = await connection.fetchval(
                "SELECT (SELECT count(*) FROM messages) + (SELECT count(*) FROM run_events)"
            )
        finally:
            await connection.close()
    assert [m["content"] for m in read["messages"]] == ["Keep me", "An answer."]
    assert renamed.json() == {"id": thread_id, "title": "Renamed"}
    assert listed[0]["title"] == "Renamed"
    assert deleted.status_code == 204 and gone.status_code == 404 and again.status_code == 404
    assert replay.status_code == 404 and leftovers == 0
    assert [tuple(row) for row in audit] == [
        ("local", "thread.rename", thread_id),
        ("local", "thread.delete", thread_id),
    ]


async def test_deleting_a_thread_stops_its_run(ollama):
    ollama.enqueue(ScriptedReply(text_reply("never finished")[:1], hang=True))
    thread_id = new_id("thread")
    async with citadel(double_model(ollama, idle=30)) as url, httpx.AsyncClient() as client:
        running = asyncio.create_task(stream(client, f"{url}/agui", body(thread_id, "go")))
        await ollama.wait_for_requests()
        deleted = await client.delete(f"{url}/threads/{thread_id}")
        _, events = await running
    assert deleted.status_code == 204
    assert events[-1]["type"] == "RUN_FINISHED"
    await ollama.wait_for_disconnects(1)


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "code"),
    [
        ("GET", "/threads", {"params": {"limit": "0"}}, 422, "invalid_input"),
        ("GET", "/threads", {"params": {"limit": "abc"}}, 422, "invalid_input"),
        ("GET", "/threads", {"params": {"cursor": "not-a-cursor"}}, 422, "invalid_cursor"),
        ("GET", "/threads/nope", {}, 404, "thread_not_found"),
        ("PATCH", "/threads/nope", {"json": {"title": "x"}}, 404, "thread_not_found"),
        ("PATCH", "/threads/nope", {"json": {"title": 5}}, 422, "invalid_input"),
        ("DELETE", "/threads/nope", {}, 404, "thread_not_found"),
    ],
)
async def test_bad_thread_requests(ollama, method, path, kwargs, status, code):
    async with citadel(double_model(ollama)) as url, httpx.AsyncClient() as client:
        response = await client.request(method, f"{url}{path}", **kwargs)
    assert response.status_code == status and response.json()["error"]["code"] == code
