"""Bad input gets a clear 4xx JSON error before any stream byte, and changes nothing."""

from __future__ import annotations

import httpx
import orjson
import pytest

from protocol.framing import parse_sse
from tests.conftest import citadel, double_model
from tests.doubles.ollama import ScriptedReply, text_reply, tool_call_reply
from tests.support.agui import new_id, stream, user
from tests.support.database import isolated_database_url, table_rows

THREAD = "thread-with-history"


def body(**fields):
    return {
        "threadId": THREAD,
        "runId": new_id("run"),
        "protocolVersion": "1.0",
        "messages": [user("hello")],
        **fields,
    }


def raw(content: bytes, content_type: str = "application/json"):
    return {"content": content, "headers": {"content-type": content_type}}


CASES = [
    pytest.param(
        raw(b'{"threadId": "t", '), 400, "invalid_json", "not valid JSON", id="malformed-json"
    ),
    pytest.param(raw(b"[1, 2]"), 422, "invalid_input", "JSON object", id="not-an-object"),
    pytest.param(
        {"json": {"runId": "r", "messages": []}},
        422,
        "invalid_input",
        "threadId: Field required",
        id="missing-field",
    ),
    pytest.param(
        {"json": body(messages="hello")},
        422,
        "invalid_input",
        "messages: Input should be a valid list",
        id="wrong-type",
    ),
    pytest.param(
        {"json": body(messages=[{"id": "m", "role": "wizard", "content": "x"}])},
        422,
        "invalid_input",
        "unknown role 'wizard'",
        id="unknown-role",
    ),
    pytest.param(
        {"json": body(tools=[{"name": "f", "description": "d", "parameters": {"type": "objekt"}}])},
        422,
        "invalid_input",
        "not a valid JSON Schema",
        id="invalid-tool-schema",
    ),
    pytest.param(
        {"json": body(tools=[{"name": "calculate", "description": "mine"}])},
        422,
        "invalid_input",
        "reserved by the server: calculate",
        id="tool-name-clash",
    ),
    pytest.param(
        {"json": body(messages=[user(str(i)) for i in range(6)])},
        422,
        "too_many_messages",
        "limit is 5",
        id="too-many-messages",
    ),
    pytest.param(
        {"json": body(messages=[user("x" * 5000)])},
        413,
        "payload_too_large",
        "4096 bytes",
        id="too-large",
    ),
    pytest.param(
        {"content": "chunked", "headers": {"content-type": "application/json"}},
        413,
        "payload_too_large",
        "4096 bytes",
        id="too-large-chunked",
    ),
    pytest.param(
        raw(b"threadId=t", "application/x-www-form-urlencoded"),
        415,
        "unsupported_media_type",
        "application/json",
        id="wrong-content-type",
    ),
    pytest.param(
        {"json": body(resume=[{"interruptId": "nope", "status": "resolved"}])},
        422,
        "unknown_interrupt",
        "nope",
        id="unknown-interrupt",
    ),
    pytest.param({"json": body(runId="has space")}, 422, "invalid_input", "runId", id="bad-id"),
]


@pytest.mark.parametrize(("request_kwargs", "status", "code", "fragment"), CASES)
async def test_bad_run_requests_are_refused_and_change_nothing(
    ollama, request_kwargs, status, code, fragment
):
    ollama.enqueue(ScriptedReply(text_reply("stored")))
    async with (
        isolated_database_url() as database,
        citadel(
            double_model(ollama), database_url=database, max_body_bytes=4096, max_messages=5
        ) as url,
        httpx.AsyncClient() as client,
    ):
        await stream(client, f"{url}/agui", body())  # the thread has one exchange
        before = (await client.post(f"{url}/agui/connect", json={"threadId": THREAD})).content
        rows_before = await table_rows(database)
        requests_before = len(ollama.requests)

        if request_kwargs.get("content") == "chunked":
            # No Content-Length: the limit must hold while the body streams in.
            request_kwargs = {**request_kwargs, "content": _chunks(b"x" * 5000)}
        response = await client.post(f"{url}/agui", **request_kwargs)

        after = (await client.post(f"{url}/agui/connect", json={"threadId": THREAD})).content
        rows_after = await table_rows(database)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == code and fragment in error["message"], error
    assert len(ollama.requests) == requests_before  # the model was never called
    assert _history(before) == _history(after)  # the thread is as it was
    assert rows_after == rows_before and rows_before["messages"]  # and so is the database


async def _chunks(data: bytes):
    for start in range(0, len(data), 1000):
        yield data[start : start + 1000]


def _history(hydration: bytes) -> list:
    snapshot = next(m for m in parse_sse(hydration) if '"MESSAGES_SNAPSHOT"' in m.data)
    return orjson.loads(snapshot.data)["messages"]


async def test_a_refused_run_on_a_new_thread_leaves_no_thread(ollama):
    async with citadel(double_model(ollama)) as url, httpx.AsyncClient() as client:
        thread_id = new_id("thread")
        bad = await client.post(f"{url}/agui", json=body(threadId=thread_id, tools=[{"name": "x"}]))
        missing = await client.post(f"{url}/agui/connect", json={"threadId": thread_id})
    assert (
        bad.status_code == 422 and "description: Field required" in bad.json()["error"]["message"]
    )
    assert missing.status_code == 404


async def test_resume_must_answer_every_pending_interrupt(ollama):
    ollama.enqueue(ScriptedReply(tool_call_reply([("calculate", {"expression": "1"})])))
    async with (
        citadel(double_model(ollama), approval_tools=["calculate"]) as url,
        httpx.AsyncClient() as client,
    ):
        _, first = await stream(client, f"{url}/agui", body())
        missing = await client.post(f"{url}/agui", json=body())
        reused = await client.post(f"{url}/agui", json=body(runId=first[0]["runId"]))
    assert missing.status_code == 409 and missing.json()["error"]["code"] == "interrupts_pending"
    assert reused.status_code == 409  # the same run id, still not answering
    assert len(ollama.requests) == 1


async def test_a_finished_run_id_cannot_run_again(ollama):
    async with citadel(double_model(ollama)) as url, httpx.AsyncClient() as client:
        first = body()
        await stream(client, f"{url}/agui", first)
        again = await client.post(f"{url}/agui", json={**first, "messages": [user("again")]})
    assert again.status_code == 409 and again.json()["error"]["code"] == "run_exists"


@pytest.mark.parametrize(
    ("path", "payload", "status", "code"),
    [
        ("/agui/stop", {"threadId": "nobody"}, 404, "no_active_run"),
        ("/agui/stop", {"thread": "x"}, 422, "invalid_input"),
        ("/agui/connect", {"threadId": "nobody"}, 404, "thread_not_found"),
        ("/agui/connect", {"threadId": THREAD, "lastEventId": "garbage"}, 422, "invalid_event_id"),
        (
            "/agui/connect",
            {"threadId": THREAD, "lastEventId": "no-such-run:3"},
            404,
            "run_not_found",
        ),
        ("/nowhere", {}, 404, "not_found"),
    ],
)
async def test_other_routes_refuse_clearly(ollama, path, payload, status, code):
    async with citadel(double_model(ollama)) as url, httpx.AsyncClient() as client:
        response = await client.post(f"{url}{path}", json=payload)
    assert response.status_code == status
    assert response.json()["error"]["code"] == code


async def test_wrong_method_is_a_json_405(ollama):
    async with citadel(double_model(ollama)) as url, httpx.AsyncClient() as client:
        response = await client.get(f"{url}/agui")
    assert response.status_code == 405 and response.json()["error"]["code"] == "method_not_allowed"
