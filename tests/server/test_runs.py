"""Runs outlive connections: resume with Last-Event-ID, grace, stop, one run per thread,
hydration, WebSocket, keep-alives and timeouts, all against a real server."""

from __future__ import annotations

import asyncio

import httpx
import orjson
import pytest
from ag_ui_validate.pytest_plugin import assert_valid_agui
from websockets.asyncio.client import connect as ws_connect

from agent_server.backends.resilience import RetryPolicy, Timeouts
from agent_server.models.ollama import OllamaChatModel
from protocol.framing import SSEDecoder, parse_sse, parse_sse_stream
from protocol.verifier import verify_events
from protocol.versions import WireVersion
from tests.conftest import citadel, double_model
from tests.doubles.ollama import DEFAULT_MODEL, ScriptedReply, text_reply
from tests.support import node
from tests.support.agui import new_id, stream, types, user, wait_for_text


def run_body(thread_id: str, text: str = "Hi", **extra) -> dict:
    return {
        "threadId": thread_id,
        "runId": new_id("run"),
        "protocolVersion": "1.0",
        "messages": [user(text)],
        **extra,
    }


async def test_disconnect_then_resume_with_last_event_id_loses_and_repeats_nothing(ollama):
    """Over plain HTTP; the real clients resuming live, each in its own protocol version, are
    in test_resume_real_clients.py."""
    words = " ".join(f"w{i}" for i in range(20))
    lines = text_reply(words, chunks=20)
    pieces = [line["message"]["content"] for line in lines[:20]]
    away, back = asyncio.Event(), asyncio.Event()  # the model goes on as the client comes and goes
    ollama.enqueue(ScriptedReply(lines, holds={5: away, 15: back}))
    thread_id = new_id("thread")
    async with (
        citadel(double_model(ollama), disconnect_grace=10) as url,
        httpx.AsyncClient() as client,
    ):
        decoder, first = SSEDecoder(), []
        async with client.stream("POST", f"{url}/agui", json=run_body(thread_id)) as response:
            async for chunk in response.aiter_bytes():
                first += decoder.feed(chunk)
                if sum('"TEXT_MESSAGE_CONTENT"' in m.data for m in first) >= 3:
                    break  # drop the connection mid-answer
        last_id = first[-1].id
        away.set()
        await wait_for_text(client, url, thread_id, "".join(pieces[:15]))  # made while away
        async with client.stream(
            "POST",
            f"{url}/agui/connect",
            json={"threadId": thread_id, "protocolVersion": "1.0"},
            headers={"Last-Event-ID": last_id},
        ) as response:
            back.set()  # the rest is made while the client follows
            rest = parse_sse(await response.aread())
    ids = [int(m.id.rsplit(":", 1)[1]) for m in first + rest]
    assert ids == list(range(1, len(ids) + 1))  # every event exactly once, in order
    events = [orjson.loads(m.data) for m in first + rest]
    text = "".join(e["delta"] for e in events if e["type"] == "TEXT_MESSAGE_CONTENT")
    assert text == words and events[-1]["type"] == "RUN_FINISHED"
    assert verify_events(events) == []
    assert_valid_agui(events)


async def test_an_abandoned_run_is_cancelled_after_the_grace_period(ollama):
    ollama.enqueue(ScriptedReply(text_reply("a b c")[:1], hang=True))
    thread_id = new_id("thread")
    async with (
        citadel(double_model(ollama, idle=30), disconnect_grace=0.3) as url,
        httpx.AsyncClient() as client,
    ):
        async with client.stream("POST", f"{url}/agui", json=run_body(thread_id)) as response:
            async for chunk in response.aiter_bytes():
                if b"TEXT_MESSAGE_CONTENT" in chunk:
                    break
        await ollama.wait_for_disconnects(1)  # the model call was cancelled
        # Stopping a run that is already ending waits until its end is stored.
        await client.post(f"{url}/agui/stop", json={"threadId": thread_id})
        hydrated = await client.post(f"{url}/agui/connect", json={"threadId": thread_id})
    snapshot = next(
        orjson.loads(m.data) for m in parse_sse(hydrated.content) if '"MESSAGES_SNAPSHOT"' in m.data
    )
    assert [m["role"] for m in snapshot["messages"]] == ["user", "assistant"]


async def test_one_active_run_per_thread_and_threads_run_in_parallel(ollama):
    ollama.enqueue(
        ScriptedReply(text_reply("slow")[:1], hang=True),
        ScriptedReply(text_reply("other thread")),
    )
    busy_thread = new_id("thread")
    async with citadel(double_model(ollama, idle=30)) as url, httpx.AsyncClient() as client:
        first = asyncio.create_task(stream(client, f"{url}/agui", run_body(busy_thread)))
        await ollama.wait_for_requests()
        second = await client.post(f"{url}/agui", json=run_body(busy_thread))
        status, other = await stream(client, f"{url}/agui", run_body(new_id("thread")))
        await client.post(f"{url}/agui/stop", json={"threadId": busy_thread})
        await first
    assert second.status_code == 409 and second.json()["error"]["code"] == "thread_busy"
    assert status == 200 and types(other)[-1] == "RUN_FINISHED"


async def test_after_stop_the_thread_continues_from_the_partial_answer(ollama):
    story = text_reply("Once upon a time", chunks=4)[:2]
    partial = "".join(line["message"]["content"] for line in story)
    ollama.enqueue(ScriptedReply(story, hang=True), ScriptedReply(text_reply("The end.")))
    thread_id = new_id("thread")
    async with citadel(double_model(ollama, idle=30)) as url, httpx.AsyncClient() as client:
        running = asyncio.create_task(
            stream(client, f"{url}/agui", run_body(thread_id, "Tell a story"))
        )
        await ollama.wait_for_requests()
        await wait_for_text(client, url, thread_id, partial)  # the story so far is in the run
        stopped = await client.post(f"{url}/agui/stop", json={"threadId": thread_id})
        _, events = await running
        status, after = await stream(client, f"{url}/agui", run_body(thread_id, "Go on"))
    assert stopped.json()["status"] == "cancelled"
    assert events[-1]["outcome"] == {"type": "cancelled"}
    assert types(events)[-3:] == ["TEXT_MESSAGE_END", "STEP_FINISHED", "RUN_FINISHED"]
    assert status == 200 and types(after)[-1] == "RUN_FINISHED"
    history = ollama.requests[-1]["messages"]
    assert [(m["role"], m["content"]) for m in history[1:]] == [
        ("user", "Tell a story"),
        ("assistant", partial),
        ("user", "Go on"),
    ]


@pytest.mark.node
async def test_hydration_replays_the_thread_and_real_clients_accept_it(ollama, tmp_path):
    ollama.enqueue(ScriptedReply(text_reply("Stored answer.")))
    thread_id = new_id("thread")
    async with citadel(double_model(ollama)) as url, httpx.AsyncClient() as client:
        await stream(client, f"{url}/agui", run_body(thread_id, "Remember me", state={"n": 1}))
        v1 = await client.post(
            f"{url}/agui/connect", json={"threadId": thread_id, "protocolVersion": "1.0"}
        )
        legacy = await client.post(f"{url}/agui/connect", json={"threadId": thread_id})
        missing = await client.post(f"{url}/agui/connect", json={"threadId": new_id("thread")})
    events = [orjson.loads(m.data) for m in parse_sse(v1.content)]
    assert types(events) == ["RUN_STARTED", "MESSAGES_SNAPSHOT", "STATE_SNAPSHOT", "RUN_FINISHED"]
    assert [(m["role"], m["content"]) for m in events[1]["messages"]] == [
        ("user", "Remember me"),
        ("assistant", "Stored answer."),
    ]
    assert events[2]["snapshot"] == {"n": 1}
    assert missing.status_code == 404
    assert verify_events(events) == []
    for client_version, body in (("1.0.0", v1.content), ("0.0.59", legacy.content)):
        recording = tmp_path / f"hydrate-{client_version}.sse"
        recording.write_bytes(body)
        report = await node.replay(client_version, recording)
        run = report["runs"][0]
        assert run["ok"], run["error"]
        assert [m["content"] for m in run["messages"]] == ["Remember me", "Stored answer."]
        assert run["state"] == {"n": 1}


async def test_hydrating_during_a_run_follows_it_live(ollama):
    answer = asyncio.Event()  # the model says nothing until the test has joined the run
    ollama.enqueue(ScriptedReply(text_reply("live answer", chunks=5), gate=answer))
    thread_id = new_id("thread")
    async with citadel(double_model(ollama)) as url, httpx.AsyncClient() as client:
        running = asyncio.create_task(stream(client, f"{url}/agui", run_body(thread_id, "Q")))
        await ollama.wait_for_requests()
        body = {"threadId": thread_id, "protocolVersion": "1.0"}
        joined = []
        try:
            async with client.stream("POST", f"{url}/agui/connect", json=body) as response:
                status = response.status_code
                async for event in parse_sse_stream(response.aiter_bytes()):
                    joined.append(event)
                    if len(joined) == 5:  # the hydration, then the live run's RUN_STARTED
                        answer.set()
        finally:
            answer.set()
        await running
    assert status == 200
    assert types(joined)[:4] == [
        "RUN_STARTED",
        "MESSAGES_SNAPSHOT",
        "STATE_SNAPSHOT",
        "RUN_FINISHED",
    ]
    assert [m["content"] for m in joined[1]["messages"]] == ["Q"]
    live = joined[4:]
    assert types(live)[0] == "RUN_STARTED" and types(live)[-1] == "RUN_FINISHED"
    assert "".join(e["delta"] for e in live if e["type"] == "TEXT_MESSAGE_CONTENT") == "live answer"
    assert verify_events(joined) == []


async def test_hydration_of_a_thread_waiting_for_approval_carries_the_interrupt(ollama):
    from tests.doubles.ollama import tool_call_reply

    ollama.enqueue(ScriptedReply(tool_call_reply([("calculate", {"expression": "1+1"})])))
    thread_id = new_id("thread")
    async with (
        citadel(double_model(ollama), approval_tools=["calculate"]) as url,
        httpx.AsyncClient() as client,
    ):
        _, first = await stream(client, f"{url}/agui", run_body(thread_id))
        response = await client.post(
            f"{url}/agui/connect", json={"threadId": thread_id, "protocolVersion": "1.0"}
        )
        unanswered = await client.post(f"{url}/agui", json=run_body(thread_id))
    [interrupt] = first[-1]["outcome"]["interrupts"]
    hydrated = [orjson.loads(m.data) for m in parse_sse(response.content)]
    assert hydrated[-1]["outcome"]["interrupts"][0]["id"] == interrupt["id"]
    assert unanswered.status_code == 409
    assert unanswered.json()["error"]["code"] == "interrupts_pending"


async def test_keepalive_comments_while_the_model_is_silent(ollama):
    ollama.enqueue(ScriptedReply(text_reply("late")[:1], hang=True))
    thread_id = new_id("thread")
    body = b""
    async with (
        citadel(double_model(ollama, idle=30), keepalive_interval=0.2) as url,
        httpx.AsyncClient() as client,
    ):
        async with (
            asyncio.timeout(5),
            client.stream("POST", f"{url}/agui", json=run_body(thread_id)) as response,
        ):
            async for chunk in response.aiter_bytes():
                body += chunk
                if body.count(b": keep-alive\n\n") >= 2:
                    break
        await client.post(f"{url}/agui/stop", json={"threadId": thread_id})
    assert b"\r" not in body


async def test_a_run_longer_than_the_run_timeout_ends_with_timeout(ollama):
    ollama.enqueue(ScriptedReply(text_reply("never ends")[:1], hang=True))
    async with (
        citadel(double_model(ollama, idle=30), run_timeout=0.5) as url,
        httpx.AsyncClient() as client,
    ):
        _, events = await stream(client, f"{url}/agui", run_body(new_id("thread")))
    assert events[-1]["type"] == "RUN_ERROR" and events[-1]["code"] == "timeout"
    assert verify_events(events) == []
    await ollama.wait_for_disconnects(1)


async def test_model_backend_down_is_model_unavailable_quickly(unused_tcp_port):
    model = OllamaChatModel(
        f"http://127.0.0.1:{unused_tcp_port}",
        DEFAULT_MODEL,
        retry=RetryPolicy(attempts=2, base_delay=0.01),
        timeouts=Timeouts(connect=1, first_byte=2, idle=2),
    )
    async with citadel(model) as url, httpx.AsyncClient() as client:
        async with asyncio.timeout(10):
            _, events = await stream(client, f"{url}/agui", run_body(new_id("thread")))
        ready = await client.get(f"{url}/ready")
    assert events[-1]["type"] == "RUN_ERROR" and events[-1]["code"] == "model_unavailable"
    assert ready.status_code == 503
    assert ready.json()["checks"]["model"]["code"] == "model_unavailable"


async def test_legacy_clients_get_gated_shapes(ollama):
    ollama.enqueue(ScriptedReply(text_reply("x")[:1], hang=True))
    thread_id = new_id("thread")
    async with citadel(double_model(ollama, idle=30)) as url, httpx.AsyncClient() as client:
        body = run_body(thread_id)
        del body["protocolVersion"]
        running = asyncio.create_task(stream(client, f"{url}/agui", body))
        await ollama.wait_for_requests()
        await client.post(f"{url}/agui/stop", json={"threadId": thread_id})
        _, events = await running
    assert "outcome" not in events[-1]
    assert verify_events(events, WireVersion.LEGACY) == []


async def test_websocket_runs_stops_and_refuses_bad_input(ollama):
    ollama.enqueue(
        ScriptedReply(text_reply("over the socket")),
        ScriptedReply(text_reply("x")[:1], hang=True),
    )
    thread_id = new_id("thread")
    async with citadel(double_model(ollama, idle=30)) as url:
        ws_url = url.replace("http", "ws") + "/agui/ws"
        async with ws_connect(ws_url) as socket:
            await socket.send(orjson.dumps(run_body(thread_id)).decode())
            first = [orjson.loads(await socket.recv())]
            while first[-1]["type"] != "RUN_FINISHED":
                first.append(orjson.loads(await socket.recv()))
            # The same socket takes the next run, and a stop frame ends it.
            await socket.send(orjson.dumps(run_body(thread_id, "again")).decode())
            second = [orjson.loads(await socket.recv())]
            await ollama.wait_for_requests(2)
            await socket.send('{"type": "stop"}')
            while second[-1]["type"] != "RUN_FINISHED":
                second.append(orjson.loads(await socket.recv()))
        async with ws_connect(ws_url) as socket:
            await socket.send('{"threadId": "t"}')
            error = orjson.loads(await socket.recv())
            await asyncio.wait_for(socket.wait_closed(), 5)
    assert (
        "".join(e["delta"] for e in first if e["type"] == "TEXT_MESSAGE_CONTENT")
        == "over the socket"
    )
    assert verify_events(first) == [] and verify_events(second) == []
    assert second[-1]["outcome"] == {"type": "cancelled"}
    assert error["error"]["code"] == "invalid_input"
    assert socket.close_code == 4422


async def test_capabilities_match_the_ag_ui_schema(ollama):
    from ag_ui.core import AgentCapabilities

    async with citadel(double_model(ollama)) as url, httpx.AsyncClient() as client:
        response = await client.get(f"{url}/agui/capabilities")
        health = await client.get(f"{url}/health")
        ready = await client.get(f"{url}/ready")
    capabilities = AgentCapabilities.model_validate(response.json())
    assert capabilities.transport.websocket and capabilities.transport.resumable
    assert {tool.name for tool in capabilities.tools.items} >= {"calculate", "get_current_time"}
    assert health.json() == {"status": "ok"}
    assert ready.status_code == 200 and ready.json()["checks"]["model"]["status"] == "ok"
