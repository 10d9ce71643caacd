"""OllamaChatModel against the Ollama test double (no Ollama server can run here)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from agent_server.backends.errors import BackendError, BackendTimeout, BackendUnavailable
from agent_server.backends.resilience import DEFAULT_TIMEOUTS, RetryPolicy, Timeouts
from agent_server.models.base import (
    ChatMessage,
    ChatRequest,
    Delta,
    ReasoningDelta,
    TextDelta,
    ToolCallDelta,
    ToolCallRequest,
    ToolSpec,
    Usage,
)
from agent_server.models.ollama import OllamaChatModel
from tests.doubles import (
    DEFAULT_MODEL,
    OllamaDouble,
    ScriptedReply,
    text_reply,
    thinking_reply,
    tool_call_reply,
)

HELLO = ChatRequest(messages=[ChatMessage("user", "Say hello.")])
CLOCK = ToolSpec(
    "get_current_time",
    "Current time in a timezone",
    {"type": "object", "properties": {"timezone": {"type": "string"}}, "required": ["timezone"]},
)
FAST_RETRY = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.05)


@pytest.fixture
async def ollama() -> AsyncIterator[OllamaDouble]:
    async with OllamaDouble() as double:
        yield double


@pytest.fixture
async def model(ollama: OllamaDouble) -> AsyncIterator[OllamaChatModel]:
    chat = OllamaChatModel(ollama.url, DEFAULT_MODEL, retry=FAST_RETRY)
    yield chat
    await chat.aclose()


async def collect(model: OllamaChatModel, request: ChatRequest = HELLO) -> list[Delta]:
    return [delta async for delta in model.stream(request)]


async def test_text_streams_as_deltas_then_usage(
    ollama: OllamaDouble, model: OllamaChatModel
) -> None:
    ollama.enqueue(ScriptedReply(text_reply("Hello there", chunks=3, prompt_tokens=26)))

    deltas = await collect(model)

    assert [type(d) for d in deltas] == [TextDelta, TextDelta, TextDelta, Usage]
    assert "".join(d.text for d in deltas[:3]) == "Hello there"
    assert deltas[-1] == Usage(input_tokens=26, output_tokens=3)


async def test_tool_call_object_arguments_become_json_text(
    ollama: OllamaDouble, model: OllamaChatModel
) -> None:
    calls = [("get_current_time", {"timezone": "UTC"}), ("search", {"q": "café", "limit": 2})]
    ollama.enqueue(ScriptedReply(tool_call_reply(calls)))

    deltas = await collect(model, ChatRequest(HELLO.messages, tools=[CLOCK]))

    tool_deltas = [d for d in deltas if isinstance(d, ToolCallDelta)]
    assert [(d.index, d.name, json.loads(d.arguments)) for d in tool_deltas] == [
        (0, "get_current_time", {"timezone": "UTC"}),
        (1, "search", {"q": "café", "limit": 2}),
    ]
    server_ids = [c["id"] for c in tool_call_reply(calls)[0]["message"]["tool_calls"]]
    assert [d.id for d in tool_deltas] == server_ids
    assert isinstance(deltas[-1], Usage)


async def test_tool_calls_without_ids_get_unique_generated_ids(
    ollama: OllamaDouble, model: OllamaChatModel
) -> None:
    calls = [("get_current_time", {"timezone": "UTC"}), ("get_current_time", {"timezone": "CET"})]
    ollama.enqueue(ScriptedReply(tool_call_reply(calls, ids=False)))
    ollama.enqueue(ScriptedReply(tool_call_reply(calls[:1], ids=False)))

    first = [d for d in await collect(model) if isinstance(d, ToolCallDelta)]
    second = [d for d in await collect(model) if isinstance(d, ToolCallDelta)]

    ids = [d.id for d in first + second]
    assert all(i and i.startswith("call_") for i in ids)
    assert len(set(ids)) == 3  # unique across turns, not only within one


async def test_thinking_becomes_reasoning_before_text(
    ollama: OllamaDouble, model: OllamaChatModel
) -> None:
    ollama.enqueue(ScriptedReply(thinking_reply(thinking="User greets. Reply.", text="Hi!")))

    deltas = await collect(model)

    kinds = [type(d) for d in deltas]
    assert kinds == [ReasoningDelta, ReasoningDelta, TextDelta, TextDelta, Usage]
    assert "".join(d.text for d in deltas if isinstance(d, ReasoningDelta)) == "User greets. Reply."
    assert "".join(d.text for d in deltas if isinstance(d, TextDelta)) == "Hi!"


async def test_error_line_mid_stream_raises_after_earlier_deltas(
    ollama: OllamaDouble, model: OllamaChatModel
) -> None:
    lines = [*text_reply("partial", chunks=1)[:1], {"error": "llama runner process has terminated"}]
    ollama.enqueue(ScriptedReply(lines))
    received: list[Delta] = []

    with pytest.raises(BackendError, match="llama runner process has terminated") as caught:
        async for delta in model.stream(HELLO):
            received.append(delta)

    assert type(caught.value) is BackendError
    assert received == [TextDelta("partial")]
    assert len(ollama.requests) == 1


async def test_model_not_found_says_to_pull_it(
    ollama: OllamaDouble, model: OllamaChatModel
) -> None:
    not_found = {"error": f"model '{DEFAULT_MODEL}' not found"}
    ollama.enqueue(ScriptedReply(status=404, error_body=not_found))

    with pytest.raises(BackendError, match=f"ollama pull {DEFAULT_MODEL}") as caught:
        await collect(model)

    assert type(caught.value) is BackendError  # a client mistake, not an outage
    assert "not found" in str(caught.value)
    assert len(ollama.requests) == 1  # not retried


async def test_overload_is_retried_then_succeeds(
    ollama: OllamaDouble, model: OllamaChatModel
) -> None:
    ollama.enqueue(ScriptedReply(status=503), ScriptedReply(text_reply("ok", chunks=1)))

    deltas = await collect(model)

    assert deltas[0] == TextDelta("ok")
    assert len(ollama.requests) == 2


async def test_persistent_overload_is_unavailable(
    ollama: OllamaDouble, model: OllamaChatModel
) -> None:
    ollama.enqueue(*[ScriptedReply(status=503, error_body={"error": "server busy"})] * 3)

    with pytest.raises(BackendUnavailable, match="HTTP 503: server busy"):
        await collect(model)

    assert len(ollama.requests) == FAST_RETRY.attempts


async def test_request_body_carries_keep_alive_think_options_and_tools(
    ollama: OllamaDouble,
) -> None:
    model = OllamaChatModel(
        ollama.url,
        "qwen3",
        keep_alive="10m",
        think=True,
        options={"num_ctx": 4096, "temperature": 0.9},
    )
    request = ChatRequest(HELLO.messages, tools=[CLOCK], max_tokens=64, temperature=0.2)

    await collect(model, request)
    await model.aclose()

    body = ollama.requests[0]
    assert body["model"] == "qwen3"
    assert body["stream"] is True
    assert body["keep_alive"] == "10m"
    assert body["think"] is True
    assert body["options"] == {"num_ctx": 4096, "temperature": 0.2, "num_predict": 64}
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": CLOCK.name,
                "description": CLOCK.description,
                "parameters": CLOCK.parameters,
            },
        }
    ]


async def test_think_and_options_are_left_out_unless_set(
    ollama: OllamaDouble, model: OllamaChatModel
) -> None:
    await collect(model)

    body = ollama.requests[0]
    assert "think" not in body
    assert "options" not in body
    assert "tools" not in body
    assert body["keep_alive"] == "5m"


@pytest.mark.parametrize(
    ("choice", "offered"),
    [("auto", ["get_current_time", "search"]), ("none", None), ("search", ["search"])],
)
async def test_tool_choice_narrows_the_offered_tools(
    ollama: OllamaDouble, model: OllamaChatModel, choice: str, offered: list[str] | None
) -> None:
    search = ToolSpec("search", "Search the knowledge base")

    await collect(model, ChatRequest(HELLO.messages, tools=[CLOCK, search], tool_choice=choice))

    tools = ollama.requests[0].get("tools")
    assert (tools and [t["function"]["name"] for t in tools]) == offered


async def test_history_converts_tool_calls_to_objects_and_names_tool_results(
    ollama: OllamaDouble, model: OllamaChatModel
) -> None:
    history = [
        ChatMessage("system", "Be brief."),
        ChatMessage("user", "Time in UTC and CET?"),
        ChatMessage(
            "assistant",
            "",
            tool_calls=(
                ToolCallRequest("call_1", "get_current_time", '{"timezone": "UTC"}'),
                ToolCallRequest("call_2", "get_current_time", '{"timezone": "CET"'),  # cut off
            ),
        ),
        ChatMessage("tool", "12:00", tool_call_id="call_1", tool_name="get_current_time"),
        ChatMessage("tool", "13:00", tool_call_id="call_2"),  # name comes from the call
    ]

    await collect(model, ChatRequest(history))

    assert ollama.requests[0]["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Time in UTC and CET?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": "call_1",
                    "function": {"name": "get_current_time", "arguments": {"timezone": "UTC"}},
                },
                {"id": "call_2", "function": {"name": "get_current_time", "arguments": {}}},
            ],
        },
        {
            "role": "tool",
            "content": "12:00",
            "tool_name": "get_current_time",
            "tool_call_id": "call_1",
        },
        {
            "role": "tool",
            "content": "13:00",
            "tool_name": "get_current_time",
            "tool_call_id": "call_2",
        },
    ]


async def test_stalled_stream_times_out_after_the_idle_limit(ollama: OllamaDouble) -> None:
    model = OllamaChatModel(ollama.url, DEFAULT_MODEL, timeouts=Timeouts(idle=0.3))
    ollama.enqueue(ScriptedReply(text_reply("Hel", chunks=1)[:1], hang=True))
    received: list[Delta] = []
    started = time.monotonic()

    # The reply never goes on: the 0.3 s idle limit ends it, not the default 30 s one.
    with pytest.raises(BackendTimeout, match="stalled"):
        async with asyncio.timeout(DEFAULT_TIMEOUTS.idle / 3):
            async for delta in model.stream(HELLO):
                received.append(delta)

    assert time.monotonic() - started >= 0.3
    assert received == [TextDelta("Hel")]
    assert len(ollama.requests) == 1  # never retried once a delta was out
    await model.aclose()


async def test_silent_server_times_out_before_first_byte_and_is_retried(
    ollama: OllamaDouble,
) -> None:
    model = OllamaChatModel(
        ollama.url, DEFAULT_MODEL, timeouts=Timeouts(first_byte=0.2), retry=FAST_RETRY
    )
    ollama.enqueue(ScriptedReply(hang=True), ScriptedReply(text_reply("late", chunks=1)))

    deltas = await collect(model)

    assert deltas[0] == TextDelta("late")
    assert len(ollama.requests) == 2
    await model.aclose()


async def test_cancelling_the_consumer_closes_the_stream(
    ollama: OllamaDouble, model: OllamaChatModel
) -> None:
    ollama.enqueue(ScriptedReply(text_reply("Hello", chunks=1)[:1], hang=True))
    first = asyncio.Event()

    async def consume() -> None:
        async for _ in model.stream(HELLO):
            first.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first.wait(), 5)
    task.cancel()

    await ollama.wait_for_disconnects(1)
    assert task.cancelled()


async def test_closing_the_stream_early_disconnects(
    ollama: OllamaDouble, model: OllamaChatModel
) -> None:
    # The reply stays open after its first line: nothing but the close can end it (rather
    # than the rest of it, sent 50 ms apart, outrunning the disconnect).
    ollama.enqueue(ScriptedReply(text_reply("a long answer", chunks=5)[:1], hang=True))

    stream = model.stream(HELLO)
    assert isinstance(await anext(stream), TextDelta)
    await stream.aclose()

    await ollama.wait_for_disconnects(1)


@pytest.mark.parametrize("line", ["{not json", "[1, 2]"])
async def test_malformed_line_is_a_model_error(
    ollama: OllamaDouble, model: OllamaChatModel, line: str
) -> None:
    ollama.enqueue(ScriptedReply([line]))

    with pytest.raises(BackendError, match="malformed stream line"):
        await collect(model)


async def test_stream_cut_before_done_is_a_model_error(
    ollama: OllamaDouble, model: OllamaChatModel
) -> None:
    ollama.enqueue(ScriptedReply(text_reply("cut", chunks=1)[:1]))

    with pytest.raises(BackendError, match="before its final"):
        await collect(model)


async def test_check_passes_when_the_model_is_pulled(ollama: OllamaDouble) -> None:
    for name in (DEFAULT_MODEL, DEFAULT_MODEL.removesuffix(":latest")):
        model = OllamaChatModel(ollama.url, name)
        await model.check()
        await model.aclose()


async def test_check_says_when_the_model_is_not_pulled(ollama: OllamaDouble) -> None:
    model = OllamaChatModel(ollama.url, "qwen3:8b")

    with pytest.raises(BackendError, match=r"'qwen3:8b' is not pulled.*ollama pull qwen3:8b"):
        await model.check()
    await model.aclose()


async def test_server_down_is_unavailable_quickly() -> None:
    async with OllamaDouble() as gone:
        url = gone.url
    model = OllamaChatModel(url, DEFAULT_MODEL, retry=FAST_RETRY)

    with pytest.raises(BackendUnavailable, match="cannot connect"):
        # Refused at once, three times: no connect timeout (5 s) is waited out.
        async with asyncio.timeout(DEFAULT_TIMEOUTS.connect):
            await collect(model)

    await model.aclose()


async def test_double_answers_like_ollama_outside_chat() -> None:
    async with (
        OllamaDouble(models=["qwen3:0.6b"], capabilities=["completion", "thinking"]) as double,
        httpx.AsyncClient(base_url=double.url) as http,
    ):
        double.enqueue(ScriptedReply(status=429, headers={"Retry-After": "7"}))

        root = await http.get("/")
        tags = (await http.get("/api/tags")).json()
        show = await http.post("/api/show", json={"model": "qwen3:0.6b"})
        unknown = await http.post("/api/show", json={"model": "llama3.2"})
        limited = await http.post("/api/chat", json={"model": "qwen3:0.6b", "messages": []})

    assert root.text == "Ollama is running"
    assert [m["name"] for m in tags["models"]] == ["qwen3:0.6b"]
    assert show.json()["capabilities"] == ["completion", "thinking"]
    assert unknown.status_code == 404 and unknown.json() == {"error": "model 'llama3.2' not found"}
    assert limited.status_code == 429 and limited.headers["retry-after"] == "7"
    assert double.requests == [{"model": "qwen3:0.6b", "messages": []}]
