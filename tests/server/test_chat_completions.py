"""``POST /v1/chat/completions`` and ``GET /v1/models`` through the official ``openai`` SDK
(sync, async, streamed), over the configured model and over the agent (model ``citadel``).

The chat model is the Ollama backend on OllamaDouble (a TEST DOUBLE: no Ollama server runs
here), which records what the backend was asked; embedder, vector engine and database are
real. The last test runs a real OpenAI-compatible server, llama_cpp.server (slow).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import jsonschema
import openai
import pytest

from agent_server.backends.resilience import RetryPolicy, Timeouts
from agent_server.models.ollama import OllamaChatModel
from agent_server.models.openai import OpenAIChatModel
from tests.conftest import citadel, double_model
from tests.doubles.ollama import DEFAULT_MODEL, DEFAULT_TEXT, ScriptedReply, text_reply
from tests.doubles.ollama import tool_call_reply as ollama_tool_call
from tests.models.test_openai import LlamaServer, llama_server  # noqa: F401 (a fixture)
from tests.server.test_access import api_key, server
from tests.server.test_agui_knowledge import HANDBOOK, ingest
from tests.support.clerk import bearer, session_token
from tests.support.database import isolated_database_url, table_rows

THREAD = "X-Citadel-Thread-Id"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 40}},
            "required": ["city"],
        },
    },
}
CLOCK = {
    "type": "function",
    "function": {
        "name": "get_clock",
        "description": "The time in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
HELLO = [{"role": "user", "content": "Say hello."}]


@contextlib.asynccontextmanager
async def sdk(url: str, api_key: str = "unused") -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=api_key, max_retries=0) as client:
        yield client


def down_model(port: int) -> OllamaChatModel:
    """The Ollama backend pointed at a port where nothing listens."""
    return OllamaChatModel(
        f"http://127.0.0.1:{port}",
        DEFAULT_MODEL,
        retry=RetryPolicy(attempts=1),
        timeouts=Timeouts(connect=2, first_byte=10),
    )


def offered(request: dict[str, Any]) -> list[dict[str, Any]]:
    """The tools a backend request offered, as OpenAI function tools."""
    return request.get("tools", [])


# The configured model -------------------------------------------------------------------------


async def test_the_sync_sdk_gets_exactly_what_it_asked_of_the_configured_model(ollama):
    async with citadel(double_model(ollama), store="memory") as url:

        def ask() -> Any:
            with openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0) as client:
                return client.chat.completions.create(
                    model=DEFAULT_MODEL,
                    messages=[{"role": "system", "content": "Be terse."}, *HELLO],
                    temperature=0.3,
                    max_tokens=7,
                )

        answer = await asyncio.to_thread(ask)
    assert answer.object == "chat.completion" and answer.model == DEFAULT_MODEL
    [choice] = answer.choices
    assert choice.message.content == DEFAULT_TEXT and choice.finish_reason == "stop"
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (26, 3)
    assert answer.usage.total_tokens == 29
    # No agent prompt, tools or settings: the backend was asked what the client asked.
    [request] = ollama.requests
    assert request["messages"] == [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "Say hello."},
    ]
    assert request["options"] == {"temperature": 0.3, "num_predict": 7} and "tools" not in request


async def test_the_async_sdk_streams_the_answer_then_usage(ollama):
    async with citadel(double_model(ollama), store="memory") as url, sdk(url) as client:
        stream = await client.chat.completions.create(
            model=DEFAULT_MODEL,
            messages=HELLO,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == DEFAULT_TEXT
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 3
    assert len({c.id for c in chunks}) == 1


async def test_a_stream_is_lf_framed_sse_that_ends_with_done(ollama):
    body = {"model": DEFAULT_MODEL, "messages": HELLO, "stream": True}
    async with (
        citadel(double_model(ollama), store="memory") as url,
        httpx.AsyncClient() as client,
    ):
        response = await client.post(f"{url}/v1/chat/completions", json=body)
    assert response.headers["content-type"].startswith("text/event-stream")
    assert "\r" not in response.text and response.text.endswith("data: [DONE]\n\n")
    frames = response.text.removesuffix("\n\n").split("\n\n")
    assert all(frame.startswith("data: ") and "\n" not in frame for frame in frames)
    assert [json.loads(f[6:])["object"] for f in frames[:-1]] == ["chat.completion.chunk"] * 5


@pytest.mark.parametrize("stream", [False, True])
async def test_tools_and_a_named_tool_choice_pass_through_and_calls_come_back(ollama, stream):
    ollama.enqueue(ScriptedReply(ollama_tool_call([("get_weather", {"city": "Paris"})])))
    ollama.enqueue(ScriptedReply(text_reply("Sunny in Paris.")))
    ask = {"role": "user", "content": "Weather in Paris?"}
    choice = {"type": "function", "function": {"name": "get_weather"}}
    async with citadel(double_model(ollama), store="memory") as url, sdk(url) as client:
        if stream:
            async with client.chat.completions.stream(
                model=DEFAULT_MODEL, messages=[ask], tools=[WEATHER, CLOCK], tool_choice=choice
            ) as events:
                first = await events.get_final_completion()
        else:
            first = await client.chat.completions.create(
                model=DEFAULT_MODEL, messages=[ask], tools=[WEATHER, CLOCK], tool_choice=choice
            )
        [call] = first.choices[0].message.tool_calls
        result = {"role": "tool", "tool_call_id": call.id, "content": '{"sky": "sunny"}'}
        # A created answer's message goes back into the history as the SDK made it (the
        # stream helper's has fields of its own, which the API refuses).
        function = {"name": call.function.name, "arguments": call.function.arguments}
        echo = {"role": "assistant", "tool_calls": [{"id": call.id, "function": function}]}
        second = await client.chat.completions.create(
            model=DEFAULT_MODEL,
            messages=[ask, echo if stream else first.choices[0].message, result],
            tools=[WEATHER],
        )
    assert first.choices[0].finish_reason == "tool_calls"
    assert call.type == "function" and call.function.name == "get_weather" and call.id
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    # Ollama cannot force a tool: the backend offers only the named one.
    assert offered(ollama.requests[0]) == [WEATHER]
    assert second.choices[0].message.content == "Sunny in Paris."
    history = ollama.requests[1]["messages"]
    assert history[1]["tool_calls"][0]["function"] == {
        "name": "get_weather",
        "arguments": {"city": "Paris"},
    }
    assert history[2] == {
        "role": "tool",
        "content": '{"sky": "sunny"}',
        "tool_call_id": call.id,
        "tool_name": "get_weather",
    }


@pytest.mark.parametrize(
    ("choice", "names"),
    [("none", []), ("auto", ["get_weather", "get_clock"]), (None, ["get_weather", "get_clock"])],
)
async def test_tool_choice_keywords_decide_what_the_backend_is_offered(ollama, choice, names):
    extra = {} if choice is None else {"tool_choice": choice}
    async with citadel(double_model(ollama), store="memory") as url, sdk(url) as client:
        await client.chat.completions.create(
            model=DEFAULT_MODEL, messages=HELLO, tools=[WEATHER, CLOCK], **extra
        )
    assert [tool["function"]["name"] for tool in offered(ollama.requests[0])] == names


# The agent: model "citadel" -------------------------------------------------------------------


async def test_citadel_searches_and_cites_the_passages_it_used(ollama):
    script = [
        ScriptedReply(ollama_tool_call([("search_knowledge_base", {"query": "pruning roses"})])),
        ScriptedReply(text_reply("Prune them in late winter [handbook/garden.md].")),
    ]
    ollama.enqueue(*script, *script)
    ask = [{"role": "user", "content": "When do I prune roses?"}]
    async with citadel(double_model(ollama), retrieval="auto") as url, sdk(url) as client:
        await ingest(url, HANDBOOK)
        answer = await client.chat.completions.create(model="citadel", messages=ask)
        stream = await client.chat.completions.create(model="citadel", messages=ask, stream=True)
        chunks = [chunk async for chunk in stream]
    message = answer.choices[0].message
    assert message.content == "Prune them in late winter [handbook/garden.md]."
    # The search ran on the server: it is not a tool call of the client's.
    assert message.tool_calls is None and answer.choices[0].finish_reason == "stop"
    citations = message.citations  # the extension field; the SDK keeps unknown fields
    assert citations and {hit["source"] for hit in citations} == {"handbook/garden.md"}
    assert "late winter" in citations[0]["snippet"] and 0 < citations[0]["score"] <= 1
    assert citations[0]["headings"] == ["Gardening", "Pruning roses"]
    # Streamed, the citations come on the chunk that finishes the answer.
    last = [chunk for chunk in chunks if chunk.choices][-1]
    assert last.choices[0].finish_reason == "stop"
    assert last.choices[0].delta.citations == citations
    # The model read the hits and was told to cite them.
    assert "late winter" in ollama.requests[1]["messages"][-1]["content"]
    assert "cite each source" in ollama.requests[1]["messages"][0]["content"]


async def test_citadel_cites_every_passage_it_retrieved_when_it_names_none(ollama):
    ollama.enqueue(ScriptedReply(text_reply("Feed it daily.")))
    ask = [{"role": "user", "content": "How do I keep my sourdough starter going?"}]
    async with citadel(double_model(ollama), retrieval="always") as url, sdk(url) as client:
        await ingest(url, HANDBOOK)
        answer = await client.chat.completions.create(model="citadel", messages=ask)
    citations = answer.choices[0].message.citations
    assert citations[0]["source"] == "handbook/kitchen.md"
    assert len(citations) == len({(hit["source"], hit["snippet"]) for hit in citations}) > 1


async def test_citadel_without_the_thread_header_stores_nothing(ollama):
    ollama.enqueue(ScriptedReply(text_reply("Hello.")), ScriptedReply(text_reply("Hello again.")))
    async with (
        isolated_database_url() as database,
        citadel(double_model(ollama), database_url=database, retrieval="off") as url,
        sdk(url) as client,
    ):
        before = await table_rows(database)
        answer = await client.chat.completions.create(model="citadel", messages=HELLO)
        stream = await client.chat.completions.create(model="citadel", messages=HELLO, stream=True)
        streamed = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        after = await table_rows(database)
        async with httpx.AsyncClient() as http:
            listed = (await http.get(f"{url}/threads")).json()["threads"]
    assert answer.choices[0].message.content == "Hello." and streamed == "Hello again."
    assert after == before and listed == []


async def test_citadel_with_the_thread_header_keeps_the_conversation_on_that_thread(ollama):
    ollama.enqueue(ScriptedReply(text_reply("Hello Ada.")), ScriptedReply(text_reply("Ada.")))
    header = {THREAD: "chat-thread-1"}
    first_ask = {"role": "user", "content": "I am Ada."}
    async with citadel(double_model(ollama), retrieval="off") as url, sdk(url) as client:
        first = await client.chat.completions.create(
            model="citadel", messages=[first_ask], extra_headers=header
        )
        # The client sends its whole history, as OpenAI clients do; the thread already has it.
        history = [first_ask, first.choices[0].message, {"role": "user", "content": "My name?"}]
        await client.chat.completions.create(
            model="citadel", messages=history, extra_headers=header
        )
        async with httpx.AsyncClient(base_url=url) as http:
            listed = (await http.get("/threads")).json()["threads"]
            thread = (await http.get("/threads/chat-thread-1")).json()
    assert [(t["id"], t["title"], t["messageCount"]) for t in listed] == [
        ("chat-thread-1", "I am Ada.", 4)
    ]
    assert [(m["role"], m["content"]) for m in thread["messages"]] == [
        ("user", "I am Ada."),
        ("assistant", "Hello Ada."),
        ("user", "My name?"),
        ("assistant", "Ada."),
    ]
    assert [m["content"] for m in ollama.requests[1]["messages"][1:]] == [
        "I am Ada.",
        "Hello Ada.",
        "My name?",
    ]


async def test_citadel_returns_calls_of_the_clients_tools_and_reads_their_results(ollama):
    ollama.enqueue(
        ScriptedReply(ollama_tool_call([("get_weather", {"city": "Oslo"})])),
        ScriptedReply(text_reply("Snow in Oslo.")),
    )
    ask = {"role": "user", "content": "Weather in Oslo?"}
    async with (
        citadel(double_model(ollama), store="memory", retrieval="off") as url,
        sdk(url) as client,
    ):
        first = await client.chat.completions.create(
            model="citadel", messages=[ask], tools=[WEATHER]
        )
        [call] = first.choices[0].message.tool_calls
        result = {"role": "tool", "tool_call_id": call.id, "content": "snow"}
        second = await client.chat.completions.create(
            model="citadel", messages=[ask, first.choices[0].message, result], tools=[WEATHER]
        )
    assert first.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Oslo"}
    names = [tool["function"]["name"] for tool in offered(ollama.requests[0])]
    assert "get_weather" in names and "calculate" in names  # the client's and the server's
    assert ollama.requests[1]["messages"][-1] == {
        "role": "tool",
        "content": "snow",
        "tool_call_id": call.id,
        "tool_name": "get_weather",
    }
    assert second.choices[0].message.content == "Snow in Oslo."


# Errors ---------------------------------------------------------------------------------------


async def test_an_unknown_model_is_a_404_with_code_model_not_found(ollama):
    async with citadel(double_model(ollama), store="memory") as url, sdk(url) as client:
        with pytest.raises(openai.NotFoundError) as refused:
            await client.chat.completions.create(model="gpt-4o", messages=HELLO)
        with pytest.raises(openai.NotFoundError):
            await client.models.retrieve("gpt-4o")
    assert refused.value.code == "model_not_found" and DEFAULT_MODEL in refused.value.message
    assert ollama.requests == []


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"n": 2}, "n=1"),
        ({"top_p": 0.5}, "top_p: unknown field; accepted: model, messages"),
        ({"messages": []}, "messages"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
            "only text content parts",
        ),
        ({"tool_choice": "auto"}, "tool_choice: only with tools"),
        ({"stream_options": {"include_usage": True}}, "only with stream=true"),
        ({"tools": [{**WEATHER, "function": {**WEATHER["function"], "strict": True}}]}, "strict"),
        ({"temperature": 3}, "temperature"),
        ({"model": "citadel", "temperature": 0.5}, "server's settings"),
        ({"model": "citadel", "tool_choice": "required", "tools": [WEATHER]}, "itself"),
    ],
)
async def test_bad_requests_are_a_422_naming_the_problem(ollama, change, fragment):
    body = {"model": DEFAULT_MODEL, "messages": HELLO, **change}
    async with citadel(double_model(ollama), store="memory") as url, sdk(url) as client:
        with pytest.raises(openai.UnprocessableEntityError) as refused:
            await client.chat.completions.create(**body)
    assert refused.value.code == "invalid_input" and fragment in refused.value.message
    assert ollama.requests == []


async def test_the_thread_header_is_for_model_citadel_only(ollama):
    async with citadel(double_model(ollama), store="memory") as url, sdk(url) as client:
        with pytest.raises(openai.UnprocessableEntityError) as refused:
            await client.chat.completions.create(
                model=DEFAULT_MODEL, messages=HELLO, extra_headers={THREAD: "t-1"}
            )
    assert THREAD in refused.value.message


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("model", [DEFAULT_MODEL, "citadel"])
async def test_a_model_that_is_down_is_a_503_model_unavailable(unused_tcp_port, model, stream):
    async with (
        citadel(down_model(unused_tcp_port), store="memory", retrieval="off") as url,
        sdk(url) as client,
    ):
        with pytest.raises(openai.InternalServerError) as refused:
            await client.chat.completions.create(model=model, messages=HELLO, stream=stream)
    assert refused.value.status_code == 503 and refused.value.code == "model_unavailable"
    assert "cannot connect" in refused.value.message


@pytest.mark.parametrize("model", [DEFAULT_MODEL, "citadel"])
async def test_a_failure_mid_stream_ends_the_stream_with_an_error_event(ollama, model):
    crash = {"error": "the model crashed"}
    ollama.enqueue(ScriptedReply([text_reply("Once upon", chunks=1)[0], crash]))
    body = {"model": model, "messages": HELLO, "stream": True}
    async with citadel(double_model(ollama), store="memory", retrieval="off") as url:
        async with sdk(url) as client:
            stream = await client.chat.completions.create(**body)
            seen: list[str] = []
            with pytest.raises(openai.APIError) as failed:
                async for chunk in stream:
                    seen.append(chunk.choices[0].delta.content or "")
        ollama.enqueue(ScriptedReply([text_reply("Once upon", chunks=1)[0], crash]))
        async with httpx.AsyncClient() as http:
            raw = (await http.post(f"{url}/v1/chat/completions", json=body)).text
    assert "".join(seen) == "Once upon"
    assert failed.value.code == "model_error" and "the model crashed" in failed.value.message
    last = raw.removesuffix("\n\n").split("\n\n")[-1]
    assert json.loads(last.removeprefix("data: "))["error"]["code"] == "model_error"
    assert "[DONE]" not in raw


# Models ---------------------------------------------------------------------------------------


async def test_models_lists_the_chat_model_citadel_and_the_embedder(ollama):
    async with citadel(double_model(ollama), store="memory") as url, sdk(url) as client:
        listed = await client.models.list()
        agent = await client.models.retrieve("citadel")
    assert [(m.id, m.owned_by) for m in listed.data] == [
        (DEFAULT_MODEL, "ollama"),
        ("citadel", "citadel"),
        ("all-minilm", "embedded"),
    ]
    assert agent.id == "citadel" and agent.object == "model"


# Access ---------------------------------------------------------------------------------------


async def test_machines_need_the_agents_scope_and_threads_stay_their_owners(ollama):
    ollama.enqueue(ScriptedReply(text_reply("Hello agent.")), ScriptedReply(text_reply("Hi.")))
    async with server(ollama) as (url, database):
        _, runner = await api_key(database, "agents")
        _, reader = await api_key(database, "kb:docs")
        alice, bob = session_token("alice"), session_token("bob")
        async with sdk(url, runner) as client:
            answer = await client.chat.completions.create(model=DEFAULT_MODEL, messages=HELLO)
        async with sdk(url, reader) as client:
            with pytest.raises(openai.PermissionDeniedError) as forbidden:
                await client.chat.completions.create(model=DEFAULT_MODEL, messages=HELLO)
        async with sdk(url, "not-a-token") as client:
            with pytest.raises(openai.AuthenticationError):
                await client.models.list()
        header = {THREAD: "alices-thread"}
        async with sdk(url, alice) as client:
            await client.chat.completions.create(
                model="citadel", messages=HELLO, extra_headers=header
            )
        async with sdk(url, bob) as client:
            with pytest.raises(openai.NotFoundError) as hidden:
                await client.chat.completions.create(
                    model="citadel", messages=HELLO, extra_headers=header
                )
        async with httpx.AsyncClient(base_url=url) as http:
            alices = (await http.get("/threads", headers=bearer(alice))).json()["threads"]
    assert answer.choices[0].message.content == "Hello agent."
    assert forbidden.value.code == "forbidden" and "agents" in forbidden.value.message
    assert hidden.value.code == "thread_not_found"
    assert [thread["id"] for thread in alices] == ["alices-thread"]


# A real OpenAI-compatible backend -------------------------------------------------------------


@pytest.mark.slow
async def test_a_real_openai_compatible_server_gets_the_request_as_the_client_sent_it(
    llama_server: LlamaServer,  # noqa: F811 (the fixture imported above)
):
    sent: list[dict[str, Any]] = []

    async def record(request: httpx.Request) -> None:
        if request.url.path.endswith("/chat/completions"):
            sent.append(json.loads(request.content))

    http = httpx.AsyncClient(event_hooks={"request": [record]})
    model = OpenAIChatModel(llama_server.url, "local-llm", http=http)
    forced = {"type": "function", "function": {"name": "get_weather"}}
    ask = [{"role": "user", "content": "What is the weather in Paris?"}]
    async with citadel(model, store="memory", retrieval="off") as url, sdk(url) as client:
        stream = await client.chat.completions.create(
            model="local-llm", messages=HELLO, stream=True, max_tokens=16, temperature=0
        )
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        called = await client.chat.completions.create(
            model="local-llm",
            messages=ask,
            tools=[WEATHER],
            tool_choice=forced,
            max_completion_tokens=48,
            temperature=0,
        )
    await http.aclose()
    assert text.strip()
    [call] = called.choices[0].message.tool_calls
    assert call.function.name == "get_weather" and called.choices[0].finish_reason == "tool_calls"
    jsonschema.validate(json.loads(call.function.arguments), WEATHER["function"]["parameters"])
    # llama_cpp.server reports no usage; neither do we.
    assert called.usage is None
    assert sent[0]["messages"] == HELLO and "tools" not in sent[0]
    assert (sent[0]["max_tokens"], sent[0]["temperature"]) == (16, 0)
    assert sent[1]["messages"] == ask and sent[1]["tools"] == [WEATHER]
    assert sent[1]["tool_choice"] == forced and sent[1]["max_tokens"] == 48
