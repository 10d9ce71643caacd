"""The guided policy through the whole server, on the Ollama backend (OllamaDouble, a TEST
DOUBLE: no Ollama server runs here): what the runtime does itself, what the model is asked,
and that a capable backend is asked exactly as before unless guiding is configured."""

from __future__ import annotations

import httpx

from tests.conftest import citadel, double_model
from tests.doubles.ollama import ScriptedReply, text_reply
from tests.support.agui import new_id, stream, types, user


def ask(text: str, thread_id: str | None = None) -> dict:
    return {
        "threadId": thread_id or new_id("thread"),
        "runId": new_id("run"),
        "protocolVersion": "1.0",
        "messages": [user(text)],
    }


def tool_calls(events: list[dict]) -> list[tuple[str, str]]:
    starts = {e["toolCallId"]: e["toolCallName"] for e in events if e["type"] == "TOOL_CALL_START"}
    return [(starts[e["toolCallId"]], e["delta"]) for e in events if e["type"] == "TOOL_CALL_ARGS"]


def text(events: list[dict]) -> str:
    return "".join(e["delta"] for e in events if e["type"] == "TEXT_MESSAGE_CONTENT")


async def test_guided_arithmetic_is_calculated_and_written_without_asking_the_model(ollama):
    async with (
        citadel(double_model(ollama), guided="extract") as url,
        httpx.AsyncClient() as client,
    ):
        _, events = await stream(client, f"{url}/agui", ask("What is 17 * 23?"))
    assert tool_calls(events) == [("calculate", '{"expression":"17 * 23"}')]
    assert text(events) == "17 \u00d7 23 = 391."
    assert events[-1]["type"] == "RUN_FINISHED"
    assert ollama.requests == []


async def test_a_guided_follow_up_calculates_with_the_previous_result(ollama):
    async with (
        citadel(double_model(ollama), guided="extract") as url,
        httpx.AsyncClient() as client,
    ):
        thread_id = new_id("thread")
        await stream(client, f"{url}/agui", ask("What is 17 * 23?", thread_id))
        _, events = await stream(client, f"{url}/agui", ask("And times 2?", thread_id))
    assert tool_calls(events) == [("calculate", '{"expression":"391 * 2"}')]
    assert text(events) == "391 \u00d7 2 = 782."


async def test_guided_small_talk_calls_no_tool(ollama):
    async with (
        citadel(double_model(ollama), guided="extract") as url,
        httpx.AsyncClient() as client,
    ):
        _, events = await stream(client, f"{url}/agui", ask("thanks!"))
    assert "TOOL_CALL_START" not in types(events)
    assert text(events) == "You're welcome!"
    assert ollama.requests == []


async def test_guided_by_model_the_model_makes_small_talk_with_no_tools_offered(ollama):
    ollama.enqueue(ScriptedReply(text_reply("Hi! Ask me about the docs.")))
    async with (
        citadel(double_model(ollama), guided="model") as url,
        httpx.AsyncClient() as client,
    ):
        _, events = await stream(client, f"{url}/agui", ask("hello"))
    assert text(events) == "Hi! Ask me about the docs."
    [request] = ollama.requests
    assert "tools" not in request
    assert request["messages"][-1]["content"] == "hello"


async def test_a_capable_backend_decides_itself_unless_guiding_is_configured(ollama):
    ollama.enqueue(ScriptedReply(text_reply("391")))
    async with citadel(double_model(ollama)) as url, httpx.AsyncClient() as client:
        _, events = await stream(client, f"{url}/agui", ask("What is 17 * 23?"))
    assert "TOOL_CALL_START" not in types(events)  # no call the runtime made itself
    [request] = ollama.requests
    assert request["messages"][-1]["content"] == "What is 17 * 23?"
    assert "calculate" in {tool["function"]["name"] for tool in request["tools"]}
