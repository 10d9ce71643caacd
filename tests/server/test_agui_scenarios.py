"""Every AG-UI scenario, accepted by ag-ui-validate, our verifier and both real clients.

Each scenario runs three ways against a real server whose model backend is the Ollama test
double (scripted replies): live through ag-ui-validate (errors fail), then through the real
``@ag-ui/client`` 1.0.0 and 0.0.59 (the line CopilotKit 1.74/1.75 pins) in Node.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import citadel, double_model
from tests.doubles.ollama import ScriptedReply, text_reply, thinking_reply, tool_call_reply
from tests.support.agui import (
    new_id,
    run_with_client,
    run_with_validator,
    types,
    user,
    wait_for_text,
)

pytestmark = pytest.mark.node

WAYS = ["validator", "1.0.0", "0.0.59"]

CHANGE_BACKGROUND = {
    "name": "change_background",
    "description": "Change the page background colour.",
    "parameters": {
        "type": "object",
        "properties": {"color": {"type": "string"}},
        "required": ["color"],
    },
}


async def play(
    way: str, url: str, runs: list[dict[str, Any]], state: Any = None, thread_id: str | None = None
) -> list[dict]:
    thread_id = thread_id or new_id("thread")
    if way == "validator":
        return await run_with_validator(url, runs, state, thread_id)
    results = await run_with_client(url, way, runs, state, thread_id)
    for result in results:
        assert result["error"] is None, result["error"]
        # The clients warn about anything they had to strip or could not apply.
        assert not [w for w in result["warnings"] if "patch" in w.lower() or "strip" in w.lower()]
    return results


def finished(result: dict) -> dict:
    return next(e for e in result["events"] if e["type"] == "RUN_FINISHED")


def assistant_texts(messages: list[dict]) -> list[str]:
    return [m.get("content") for m in messages if m["role"] == "assistant" and m.get("content")]


@pytest.mark.parametrize("way", WAYS)
async def test_chat(way, ollama):
    ollama.enqueue(ScriptedReply(text_reply("Hello there, friend.", chunks=4)))
    async with citadel(double_model(ollama)) as url:
        [run] = await play(way, url, [{"appendMessages": [user("Hi!")]}])
    assert assistant_texts(run["messages"]) == ["Hello there, friend."]
    contents = [e for e in run["events"] if e["type"] == "TEXT_MESSAGE_CONTENT"]
    assert len(contents) == 4  # streamed, not buffered
    assert types(run["events"])[0] == "RUN_STARTED"
    assert finished(run).get("usage", [{}])[0].get("outputTokens") == 4


@pytest.mark.parametrize("way", WAYS)
async def test_backend_tool(way, ollama):
    ollama.enqueue(
        ScriptedReply(tool_call_reply([("calculate", {"expression": "6 * 7"})])),
        ScriptedReply(text_reply("It is 42.")),
    )
    async with citadel(double_model(ollama)) as url:
        [run] = await play(way, url, [{"appendMessages": [user("What is 6 times 7?")]}])
    kinds = types(run["events"])
    assert (
        kinds.index("TOOL_CALL_START")
        < kinds.index("TOOL_CALL_END")
        < kinds.index("TOOL_CALL_RESULT")
    )
    result = next(e for e in run["events"] if e["type"] == "TOOL_CALL_RESULT")
    assert orjson.loads(result["content"]) == {"expression": "6 * 7", "result": 42}
    assert assistant_texts(run["messages"])[-1] == "It is 42."
    # The model saw the tool's result on its second turn.
    second = ollama.requests[-1]["messages"]
    assert second[-1]["role"] == "tool" and second[-1]["tool_name"] == "calculate"
    assert '"result":42' in second[-1]["content"]


@pytest.mark.parametrize("way", WAYS)
async def test_frontend_tool_round_trip(way, ollama):
    ollama.enqueue(
        ScriptedReply(tool_call_reply([("change_background", {"color": "blue"})])),
        ScriptedReply(text_reply("Done: the background is blue.")),
    )
    async with citadel(double_model(ollama)) as url:
        first, second = await play(
            way,
            url,
            [
                {"appendMessages": [user("Make it blue")], "tools": [CHANGE_BACKGROUND]},
                {"answerToolCalls": "background changed", "tools": [CHANGE_BACKGROUND]},
            ],
        )
    call = next(e for e in first["events"] if e["type"] == "TOOL_CALL_START")
    assert call["toolCallName"] == "change_background"
    assert "TOOL_CALL_RESULT" not in types(first["events"])  # the client answers it
    outcome = finished(first).get("outcome", {"type": "success"})
    if way == "0.0.59":
        assert outcome == {"type": "success"}  # pendingToolCallIds is fatal there
    else:
        assert outcome == {"type": "success", "pendingToolCallIds": [call["toolCallId"]]}
    # The next run continued from the client's tool message.
    tool_message = ollama.requests[-1]["messages"][-1]
    assert tool_message["role"] == "tool" and tool_message["content"] == "background changed"
    assert tool_message["tool_name"] == "change_background"
    assert assistant_texts(second["messages"])[-1] == "Done: the background is blue."


@pytest.mark.parametrize("way", WAYS)
async def test_approval_interrupt_and_resume(way, ollama):
    ollama.enqueue(
        ScriptedReply(tool_call_reply([("calculate", {"expression": "2 ** 10"})])),
        ScriptedReply(text_reply("2 to the 10th is 1024.")),
    )
    async with citadel(double_model(ollama), approval_tools=["calculate"]) as url:
        first, second = await play(
            way,
            url,
            [
                {"appendMessages": [user("What is 2**10?")]},
                {
                    "resumeAll": {"status": "resolved", "payload": {"approved": True}},
                    "reuseRunId": True,
                },
            ],
        )
    outcome = finished(first)["outcome"]
    assert outcome["type"] == "interrupt"
    [interrupt] = outcome["interrupts"]
    assert interrupt["reason"] == "tool_call" and interrupt["responseSchema"]["required"] == [
        "approved"
    ]
    assert "TOOL_CALL_RESULT" not in types(first["events"])  # nothing ran before approval
    # One model turn before the approval, one after the tool ran on resume.
    assert len(ollama.requests) == 2
    assert '"result":1024' in ollama.requests[1]["messages"][-1]["content"]
    result = next(e for e in second["events"] if e["type"] == "TOOL_CALL_RESULT")
    assert result["toolCallId"] == interrupt["toolCallId"]
    assert orjson.loads(result["content"])["result"] == 1024
    assert assistant_texts(second["messages"])[-1] == "2 to the 10th is 1024."
    assert finished(second).get("outcome", {"type": "success"})["type"] == "success"


@pytest.mark.parametrize("way", WAYS)
async def test_declined_approval_is_reported_to_the_model(way, ollama):
    ollama.enqueue(
        ScriptedReply(tool_call_reply([("calculate", {"expression": "1+1"})])),
        ScriptedReply(text_reply("Understood, I will not calculate.")),
    )
    async with citadel(double_model(ollama), approval_tools=["calculate"]) as url:
        _, second = await play(
            way,
            url,
            [
                {"appendMessages": [user("1+1?")]},
                {"resumeAll": {"status": "cancelled"}},
            ],
        )
    result = next(e for e in second["events"] if e["type"] == "TOOL_CALL_RESULT")
    assert orjson.loads(result["content"])["declined"] is True
    assert "declined" in ollama.requests[-1]["messages"][-1]["content"]


@pytest.mark.parametrize("way", WAYS)
async def test_shared_state(way, ollama):
    steps = [
        {"description": "Chop onions", "status": "completed"},
        {"description": "Simmer", "status": "pending"},
    ]
    ollama.enqueue(
        ScriptedReply(tool_call_reply([("update_plan", {"steps": steps[:1]})])),
        ScriptedReply(tool_call_reply([("update_plan", {"steps": steps})])),
        ScriptedReply(text_reply("Plan updated.")),
    )
    async with citadel(double_model(ollama)) as url:
        [run] = await play(
            way, url, [{"appendMessages": [user("Plan my soup")]}], state={"recipe": "soup"}
        )
    state_events = [e for e in run["events"] if e["type"].startswith("STATE_")]
    assert [e["type"] for e in state_events] == ["STATE_SNAPSHOT", "STATE_DELTA"]
    assert state_events[0]["snapshot"] == {"recipe": "soup", "steps": steps[:1]}
    assert state_events[1]["delta"] == [{"op": "add", "path": "/steps/1", "value": steps[1]}]
    assert run["state"] == {"recipe": "soup", "steps": steps}
    # The model is told the shared state the client sent.
    assert '"recipe":"soup"' in ollama.requests[0]["messages"][0]["content"]


@pytest.mark.parametrize("way", WAYS)
async def test_reasoning(way, ollama):
    ollama.enqueue(ScriptedReply(thinking_reply(thinking="The user greets me.", text="Hello!")))
    async with citadel(double_model(ollama)) as url:
        [run] = await play(way, url, [{"appendMessages": [user("Hi")]}])
    kinds = types(run["events"])
    assert kinds.index("REASONING_START") < kinds.index("REASONING_MESSAGE_CONTENT")
    assert kinds.index("REASONING_END") < kinds.index("TEXT_MESSAGE_START")
    reasoning = "".join(
        e["delta"] for e in run["events"] if e["type"] == "REASONING_MESSAGE_CONTENT"
    )
    assert reasoning == "The user greets me."
    assert assistant_texts(run["messages"])[-1] == "Hello!"


@pytest.mark.parametrize("way", WAYS)
async def test_model_error_ends_the_run_with_run_error(way, ollama):
    ollama.enqueue(
        ScriptedReply([text_reply("Partial")[0], {"error": "model crashed: out of memory"}])
    )
    async with citadel(double_model(ollama)) as url:
        [run] = await play(way, url, [{"appendMessages": [user("Hi")]}])
    [error] = run["runErrors"]
    assert error["code"] == "model_error" and "out of memory" in error["message"]
    assert types(run["events"])[-1] == "RUN_ERROR"


@pytest.mark.parametrize("way", WAYS)
async def test_stop_cancels_the_model_at_once(way, ollama):
    chunks = text_reply("Thinking about a long answer", chunks=3)
    partial = chunks[0]["message"]["content"] + chunks[1]["message"]["content"]
    ollama.enqueue(ScriptedReply(chunks[:2], hang=True))
    thread_id = new_id("thread")
    async with citadel(double_model(ollama, idle=30)) as url:
        runs = [{"appendMessages": [user("Go on")]}]
        playing = asyncio.create_task(play(way, url, runs, thread_id=thread_id))
        await ollama.wait_for_requests()
        async with httpx.AsyncClient() as client:
            await wait_for_text(client, url, thread_id, partial)  # the first deltas are sent
            response = await client.post(f"{url}/agui/stop", json={"threadId": thread_id})
        assert response.status_code == 200 and response.json()["status"] == "cancelled"
        await ollama.wait_for_disconnects(1)  # the model's stream was closed, not left running
        [run] = await asyncio.wait_for(playing, 15)
    outcome = finished(run).get("outcome")
    assert outcome == (None if way == "0.0.59" else {"type": "cancelled"})
    assert assistant_texts(run["messages"]) == [partial]
