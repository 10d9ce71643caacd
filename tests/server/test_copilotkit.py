"""The CopilotKit v2 runtime surface (/api/copilotkit) on a real server whose model is the
scripted Ollama TEST DOUBLE: what CopilotKit's client asks of it (shared/reference/
copilotkit.md), agents by id, and the single-endpoint envelope. The real client drives the
same routes in Chromium (tests/web)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from agent_server.config import ConfigError, Settings
from agent_server.services import check_agents
from protocol.framing import parse_sse_stream
from tests.conftest import citadel, double_model
from tests.doubles.ollama import DEFAULT_MODEL, OllamaDouble, ScriptedReply, text_reply
from tests.support.agui import new_id, stream, types, user
from tests.support.waiting import PATIENCE

BASE = "/api/copilotkit"

AGENTS = {
    "researcher": {
        "description": "Answers from the docs",
        "instructions": "You are the researcher. Cite every source.",
        "tools": ["search_knowledge_base", "calculate"],
        "model": "qwen3:8b",
    },
    "clock": {"description": "Tells the time", "tools": ["get_current_time"], "knowledge": False},
}


def legacy_input(thread_id: str, text: str = "Hi", run_id: str | None = None) -> dict[str, Any]:
    """A RunAgentInput as CopilotKit 1.74 sends it: no protocolVersion."""
    return {
        "threadId": thread_id,
        "runId": run_id or new_id("run"),
        "state": {},
        "messages": [user(text)],
        "tools": [],
        "context": [],
        "forwardedProps": {},
    }


@pytest.fixture
async def server(ollama: OllamaDouble):
    settings = {"llm": "ollama", "llm_url": ollama.url, "llm_model": DEFAULT_MODEL}
    async with (
        citadel(double_model(ollama), agents=AGENTS, **settings) as url,
        httpx.AsyncClient(base_url=url, timeout=PATIENCE) as client,
    ):
        yield client


async def test_info_lists_every_configured_agent_and_nothing_that_switches_modes(server):
    response = await server.get(f"{BASE}/info")
    assert response.status_code == 200
    info = response.json()
    assert list(info["agents"]) == ["default", "researcher", "clock"]
    assert info["agents"]["researcher"]["description"] == "Answers from the docs"
    assert info["agents"]["default"]["name"] == "default"
    assert info["mode"] == "sse"
    assert "intelligence" not in info and "licenseStatus" not in info
    assert isinstance(info["audioFileTranscriptionEnabled"], bool)


async def test_run_streams_the_0059_dialect_and_stores_the_thread(server, ollama):
    ollama.enqueue(ScriptedReply(text_reply("Hello from Citadel.")))
    thread_id = new_id("thread")
    status, events = await stream(server, f"{BASE}/agent/default/run", legacy_input(thread_id))
    assert status == 200
    assert types(events)[0] == "RUN_STARTED" and types(events)[-1] == "RUN_FINISHED"
    assert "protocolVersion" not in events[0]  # CopilotKit's client sent none
    text = "".join(e["delta"] for e in events if e["type"] == "TEXT_MESSAGE_CONTENT")
    assert text == "Hello from Citadel."
    thread = (await server.get(f"/threads/{thread_id}")).json()
    assert [m["role"] for m in thread["messages"]] == ["user", "assistant"]


async def test_run_sends_headers_before_the_model_answers(server, ollama):
    gate = asyncio.Event()
    ollama.enqueue(ScriptedReply(text_reply("Late."), gate=gate))
    body = legacy_input(new_id("thread"))
    async with server.stream("POST", f"{BASE}/agent/default/run", json=body) as response:
        # Headers are here while the model is still silent (CopilotKit's 10 s watchdog).
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        gate.set()
        assert b"RUN_FINISHED" in await response.aread()


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/agent/nobody/run"),
        ("POST", "/agent/nobody/connect"),
        ("POST", "/agent/nobody/stop/thread-1"),
    ],
)
async def test_an_unknown_agent_is_404_agent_not_found(server, ollama, method, path):
    response = await server.request(method, BASE + path, json=legacy_input("thread-1"))
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "agent_not_found"
    assert ollama.requests == []


async def test_agui_addresses_an_agent_by_id_and_refuses_an_unknown_one(server, ollama):
    ollama.enqueue(ScriptedReply(text_reply("It is noon.")))
    status, _ = await stream(server, "/agui/agents/clock", legacy_input(new_id("thread")))
    assert status == 200
    [request] = ollama.requests
    assert [t["function"]["name"] for t in request["tools"]] == ["get_current_time"]
    refused = await server.post("/agui/agents/nobody", json=legacy_input(new_id("thread")))
    assert refused.status_code == 404 and refused.json()["error"]["code"] == "agent_not_found"


async def test_an_agent_runs_with_its_own_instructions_tools_and_model(server, ollama):
    ollama.enqueue(ScriptedReply(text_reply("Researched.")))
    status, _ = await stream(
        server, f"{BASE}/agent/researcher/run", legacy_input(new_id("thread"), "Find it")
    )
    assert status == 200
    [request] = ollama.requests
    assert request["model"] == "qwen3:8b"
    assert request["messages"][0]["role"] == "system"
    assert request["messages"][0]["content"].startswith("You are the researcher.")
    assert sorted(t["function"]["name"] for t in request["tools"]) == [
        "calculate",
        "search_knowledge_base",
    ]


async def test_the_default_agent_keeps_the_servers_model_and_every_tool(server, ollama):
    ollama.enqueue(ScriptedReply(text_reply("Default.")))
    await stream(server, f"{BASE}/agent/default/run", legacy_input(new_id("thread")))
    [request] = ollama.requests
    assert request["model"] != "qwen3:8b"
    assert {"get_current_time", "calculate", "update_plan", "search_knowledge_base"} <= {
        t["function"]["name"] for t in request["tools"]
    }


async def test_connect_to_an_unknown_thread_is_an_empty_stream(server):
    response = await server.post(
        f"{BASE}/agent/default/connect", json=legacy_input(new_id("thread"))
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.content == b""


async def test_connect_replays_the_thread_as_one_complete_run(server, ollama):
    ollama.enqueue(ScriptedReply(text_reply("Stored answer.")))
    thread_id = new_id("thread")
    await stream(server, f"{BASE}/agent/default/run", legacy_input(thread_id, "Question?"))
    body = {**legacy_input(thread_id), "messages": []}
    status, events = await stream(server, f"{BASE}/agent/default/connect", body)
    assert status == 200
    assert types(events) == ["RUN_STARTED", "MESSAGES_SNAPSHOT", "STATE_SNAPSHOT", "RUN_FINISHED"]
    messages = events[1]["messages"]
    assert [(m["role"], m["content"]) for m in messages] == [
        ("user", "Question?"),
        ("assistant", "Stored answer."),
    ]


async def test_connect_during_a_run_follows_it_live_to_its_end(server, ollama):
    gate = asyncio.Event()
    ollama.enqueue(ScriptedReply(text_reply("Live answer."), gate=gate))
    thread_id = new_id("thread")
    run = asyncio.create_task(
        stream(server, f"{BASE}/agent/default/run", legacy_input(thread_id, "Q"))
    )
    await ollama.wait_for_requests(1)
    body = {**legacy_input(thread_id), "messages": []}
    events: list[dict[str, Any]] = []
    async with server.stream("POST", f"{BASE}/agent/default/connect", json=body) as response:
        async for event in parse_sse_stream(response.aiter_bytes()):
            events.append(event)
            if len(events) == 4:  # the thread as it is; the model has not answered yet
                gate.set()
    await run
    assert types(events)[:4] == [
        "RUN_STARTED",
        "MESSAGES_SNAPSHOT",
        "STATE_SNAPSHOT",
        "RUN_FINISHED",
    ]
    assert [m["content"] for m in events[1]["messages"]] == ["Q"]
    live = events[4:]
    assert types(live)[-1] == "RUN_FINISHED"
    assert "".join(e["delta"] for e in live if e["type"] == "TEXT_MESSAGE_CONTENT") == (
        "Live answer."
    )


@pytest.mark.parametrize("body", [None, {}, "run"], ids=["no body", "empty object", "run id"])
async def test_stop_ends_the_runs_stream_with_run_finished(server, ollama, body):
    ollama.enqueue(ScriptedReply(text_reply("Never finished."), hang=True))
    thread_id, run_id = new_id("thread"), new_id("run")
    run = asyncio.create_task(
        stream(server, f"{BASE}/agent/default/run", legacy_input(thread_id, run_id=run_id))
    )
    await ollama.wait_for_requests(1)
    content = {"runId": run_id} if body == "run" else body
    response = await server.post(
        f"{BASE}/agent/default/stop/{thread_id}",
        json=content,
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 200
    assert response.json() == {"stopped": True, "threadId": thread_id, "runId": run_id}
    status, events = await run
    assert status == 200 and types(events)[-1] == "RUN_FINISHED"
    again = await server.post(f"{BASE}/agent/default/stop/{thread_id}")
    assert again.status_code == 200 and again.json()["stopped"] is False


async def test_stop_refuses_a_body_that_is_not_json(server):
    response = await server.post(
        f"{BASE}/agent/default/stop/thread-1",
        content=b"{nope",
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_json"


async def test_single_endpoint_serves_info_run_connect_and_stop(server, ollama):
    info = await server.post(BASE, json={"method": "info"})
    assert info.status_code == 200 and "researcher" in info.json()["agents"]
    ollama.enqueue(ScriptedReply(text_reply("Enveloped.")))
    thread_id = new_id("thread")
    envelope = {
        "method": "agent/run",
        "params": {"agentId": "default"},
        "body": legacy_input(thread_id),
    }
    status, events = await stream(server, BASE, envelope)
    assert status == 200 and types(events)[-1] == "RUN_FINISHED"
    connect = {
        "method": "agent/connect",
        "params": {"agentId": "default"},
        "body": envelope["body"],
    }
    status, events = await stream(server, BASE, connect)
    assert types(events)[1] == "MESSAGES_SNAPSHOT" and len(events[1]["messages"]) == 2
    stop = {"method": "agent/stop", "params": {"agentId": "default", "threadId": thread_id}}
    stopped = await server.post(BASE, json=stop)
    assert stopped.status_code == 200 and stopped.json()["stopped"] is False


@pytest.mark.parametrize(
    ("envelope", "status", "code"),
    [
        ({"params": {}}, 422, "invalid_input"),
        ({"method": "agent/fly", "params": {"agentId": "default"}}, 422, "invalid_input"),
        ({"method": "agent/run", "body": {}}, 422, "invalid_input"),
        (
            {"method": "agent/run", "params": {"agentId": "nobody"}, "body": {}},
            404,
            "agent_not_found",
        ),
        ({"method": "agent/stop", "params": {"agentId": "default"}}, 422, "invalid_input"),
        ({"method": "transcribe", "body": {"audio": "%%%"}}, 422, "invalid_input"),
        ([1, 2], 422, "invalid_input"),
    ],
    ids=[
        "no method",
        "unknown method",
        "no agent",
        "unknown agent",
        "stop without thread",
        "audio not base64",
        "not an object",
    ],
)
async def test_single_endpoint_refuses_a_bad_envelope_and_runs_nothing(
    server, ollama, envelope, status, code
):
    response = await server.post(BASE, json=envelope)
    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    assert ollama.requests == []


async def test_single_endpoint_refuses_other_methods_and_media_types(server):
    assert (await server.get(BASE)).status_code == 405
    response = await server.post(
        BASE, content=b"method=info", headers={"Content-Type": "text/plain"}
    )
    assert response.status_code == 415


@pytest.mark.parametrize(
    ("agents", "problem"),
    [
        ({"bad id!": {}}, "is not an agent id"),
        ({"x": {"tools": ["teleport"]}}, "agents.x.tools: unknown tools: teleport"),
        ({"x": {"model": "qwen3:8b"}}, "agents.x.model needs CITADEL_LLM=ollama or openai"),
    ],
)
def test_a_profile_naming_what_does_not_exist_stops_the_server(agents, problem):
    with pytest.raises(ConfigError, match=problem):
        settings = Settings(agents=agents, llm="embedded")
        if settings.problems():
            raise ConfigError(*settings.problems())
        check_agents(settings)


def test_profiles_refuse_unknown_keys():
    with pytest.raises(ValueError, match="instrucions"):
        Settings(agents={"x": {"instrucions": "typo"}})
