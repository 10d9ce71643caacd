"""Runtime behaviour seen from the model's side: what it is told, and the tool loop's bounds."""

from __future__ import annotations

import httpx
import orjson

from tests.conftest import citadel, double_model
from tests.doubles.ollama import ScriptedReply, text_reply, tool_call_reply
from tests.support.agui import new_id, stream, types, user


def body(**fields):
    return {
        "threadId": new_id("thread"),
        "runId": new_id("run"),
        "protocolVersion": "1.0",
        "messages": [user("hello")],
        **fields,
    }


async def test_context_and_client_system_messages_reach_the_model(ollama):
    messages = [
        {"id": new_id(), "role": "developer", "content": "Always answer in French."},
        user("Bonjour"),
    ]
    context = [{"description": "Current page", "value": "/billing"}]
    async with citadel(double_model(ollama)) as url, httpx.AsyncClient() as client:
        await stream(client, f"{url}/agui", body(messages=messages, context=context))
    sent = ollama.requests[0]["messages"]
    assert [m["role"] for m in sent] == ["system", "user"]
    assert "- Current page: /billing" in sent[0]["content"]
    assert sent[0]["content"].endswith("Always answer in French.")
    tools = {tool["function"]["name"] for tool in ollama.requests[0]["tools"]}
    assert tools == {
        "get_current_time",
        "calculate",
        "update_plan",
        "search_knowledge_base",
        "add_to_knowledge_base",
    }


async def test_the_tool_loop_is_bounded(ollama):
    looping = [ScriptedReply(tool_call_reply([("calculate", {"expression": "1+1"})]))] * 3
    ollama.enqueue(*looping, ScriptedReply(text_reply("Enough tools: 2.")))
    async with (
        citadel(double_model(ollama), max_tool_rounds=3) as url,
        httpx.AsyncClient() as client,
    ):
        _, events = await stream(client, f"{url}/agui", body())
    assert types(events).count("TOOL_CALL_RESULT") == 3
    assert len(ollama.requests) == 4
    assert "tools" not in ollama.requests[-1]  # the last turn must answer
    assert events[-1]["type"] == "RUN_FINISHED"


async def test_bad_tool_calls_are_reported_to_the_model_not_fatal(ollama):
    ollama.enqueue(
        ScriptedReply(
            tool_call_reply(
                [
                    ("no_such_tool", {}),
                    ("calculate", {"expr": "1"}),
                    ("calculate", {"expression": "1/0"}),
                ]
            )
        ),
        ScriptedReply(text_reply("Sorry about that.")),
    )
    async with citadel(double_model(ollama)) as url, httpx.AsyncClient() as client:
        _, events = await stream(client, f"{url}/agui", body())
    results = [orjson.loads(e["content"]) for e in events if e["type"] == "TOOL_CALL_RESULT"]
    assert results[0] == {"error": "there is no tool named 'no_such_tool'"}
    assert "invalid arguments" in results[1]["error"] and "expression" in results[1]["error"]
    assert results[2] == {"error": "division by zero"}
    assert events[-1]["type"] == "RUN_FINISHED"
    tool_messages = [m for m in ollama.requests[-1]["messages"] if m["role"] == "tool"]
    assert len(tool_messages) == 3


async def test_parallel_tool_calls_attach_to_one_assistant_message(ollama):
    ollama.enqueue(
        ScriptedReply(
            tool_call_reply(
                [
                    ("get_current_time", {"timezone": "Asia/Tokyo"}),
                    ("calculate", {"expression": "2*3"}),
                ]
            )
        ),
        ScriptedReply(text_reply("Done.")),
    )
    async with citadel(double_model(ollama)) as url, httpx.AsyncClient() as client:
        _, events = await stream(client, f"{url}/agui", body())
    starts = [e for e in events if e["type"] == "TOOL_CALL_START"]
    assert "parentMessageId" not in starts[0]
    assert starts[1]["parentMessageId"] == starts[0]["toolCallId"]
    second_turn = ollama.requests[1]["messages"]
    assistant = next(m for m in second_turn if m["role"] == "assistant")
    assert [c["function"]["name"] for c in assistant["tool_calls"]] == [
        "get_current_time",
        "calculate",
    ]
    time_result = orjson.loads(next(m for m in second_turn if m["role"] == "tool")["content"])
    assert time_result["timezone"] == "Asia/Tokyo" and time_result["iso"].endswith("+09:00")


async def test_stored_state_is_announced_to_a_client_that_sent_none(ollama):
    thread_id = new_id("thread")
    async with citadel(double_model(ollama)) as url, httpx.AsyncClient() as client:
        _, first = await stream(client, f"{url}/agui", body(threadId=thread_id, state={"n": 1}))
        _, second = await stream(client, f"{url}/agui", body(threadId=thread_id))
    assert "STATE_SNAPSHOT" not in types(first)  # the client sent it, nothing changed
    snapshot = next(e for e in second if e["type"] == "STATE_SNAPSHOT")
    assert snapshot["snapshot"] == {"n": 1}
    assert '"n":1' in ollama.requests[1]["messages"][0]["content"]
