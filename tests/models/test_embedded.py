"""EmbeddedChatModel with the real SmolLM2-135M GGUF (llama.cpp in process).

Assertions are about the protocol (deltas, usage, schemas, serialisation, cancellation), not
about how wise a 135M model is.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from agent_server.backends.errors import BackendError, BackendUnavailable
from agent_server.models.base import (
    ChatMessage,
    ChatModel,
    ChatRequest,
    Delta,
    TextDelta,
    ToolCallDelta,
    ToolCallRequest,
    ToolSpec,
    Usage,
)
from agent_server.models.embedded import (
    EmbeddedChatModel,
    clamp,
    default_model_path,
    grammar_schema,
    template_turns,
    without_trailing_results,
)

SYSTEM = ChatMessage("system", "You are a helpful assistant.")
CLOCK = ToolSpec(
    "get_current_time",
    "Get the current time in a timezone.",
    {
        "type": "object",
        "properties": {"timezone": {"type": "string", "description": "IANA timezone name"}},
        "required": ["timezone"],
    },
)
CALCULATOR = ToolSpec(
    "calculate",
    "Evaluate an arithmetic expression.",
    {
        "type": "object",
        "properties": {"expression": {"type": "string"}},
        "required": ["expression"],
    },
)
DICE = ToolSpec(
    "roll_dice",
    "Roll dice.",
    {
        "type": "object",
        "properties": {"sides": {"type": "integer", "minimum": 100, "maximum": 105}},
        "required": ["sides"],
    },
)
# At seed 0 SmolLM2 writes well past 400 tokens for this; cancellation must cut it short.
LONG_STORY = ChatRequest(
    [ChatMessage("user", "Write a very long story about a dragon who learns to cook.")],
    max_tokens=400,
)


def ask(text: str, **options: Any) -> ChatRequest:
    return ChatRequest([SYSTEM, ChatMessage("user", text)], **options)


async def collect(model: ChatModel, request: ChatRequest) -> list[Delta]:
    return [delta async for delta in model.stream(request)]


def text_of(deltas: list[Delta]) -> str:
    return "".join(delta.text for delta in deltas if isinstance(delta, TextDelta))


def assert_tool_call(deltas: list[Delta], tools: list[ToolSpec]) -> ToolSpec:
    """One call: id and name first, then JSON arguments valid for that tool, then usage."""
    header, arguments, usage = deltas
    assert isinstance(header, ToolCallDelta) and isinstance(arguments, ToolCallDelta)
    assert header.index == arguments.index == 0
    assert header.id is not None and header.id.startswith("call_")
    spec = next(tool for tool in tools if tool.name == header.name)
    jsonschema.validate(json.loads(arguments.arguments), spec.parameters)
    assert isinstance(usage, Usage) and usage.input_tokens > 0 and usage.output_tokens > 0
    return spec


def assert_text_answer(deltas: list[Delta]) -> None:
    *texts, usage = deltas
    assert texts and all(isinstance(delta, TextDelta) for delta in texts)
    assert isinstance(usage, Usage) and usage.input_tokens > 0 and usage.output_tokens > 0


class GenerateProbe:
    """Wraps ``Llama.generate`` to count sampled tokens and overlapping generations. After
    :meth:`hold_after`, the first generation pauses (the worker thread waits) once it has
    handed out that many tokens, until :meth:`release`."""

    def __init__(self, llama: Any) -> None:
        self._generate = llama.generate
        self.tokens: list[int] = []  # tokens sampled, per generate() call
        self.active = 0
        self.peak = 0
        self.holding = threading.Event()
        self._hold_at: int | None = None
        self._released = threading.Event()

    def hold_after(self, tokens: int) -> None:
        self._hold_at = tokens

    def release(self) -> None:
        self._released.set()

    def __call__(self, *args: Any, **kwargs: Any) -> Iterator[int]:
        self.active += 1
        self.peak = max(self.peak, self.active)
        self.tokens.append(0)
        first = len(self.tokens) == 1
        try:
            for token in self._generate(*args, **kwargs):
                self.tokens[-1] += 1
                yield token
                if first and self.tokens[-1] == self._hold_at:
                    self.holding.set()
                    self._released.wait()
        finally:
            self.active -= 1


@pytest.fixture(scope="module")
async def model() -> AsyncIterator[EmbeddedChatModel]:
    # No skip when llama-cpp-python or the model is missing: `make test` installs both.
    chat = EmbeddedChatModel(default_model_path(), max_tokens=64)
    await chat.check()
    yield chat
    await chat.aclose()


@pytest.fixture
def probe(model: EmbeddedChatModel, monkeypatch: pytest.MonkeyPatch) -> GenerateProbe:
    llama = model._llm.llama  # white box: the Llama object the worker thread owns
    spy = GenerateProbe(llama)
    monkeypatch.setattr(llama, "generate", spy)
    return spy


# Model-free ------------------------------------------------------------------------------------


async def test_missing_model_file_is_model_unavailable(tmp_path: Path) -> None:
    chat = EmbeddedChatModel(str(tmp_path / "absent.gguf"))
    assert chat.provider == "embedded" and chat.model == "absent"
    with pytest.raises(BackendUnavailable, match=r"not found: .*absent\.gguf"):
        await chat.check()
    with pytest.raises(BackendUnavailable, match="not found"):
        await collect(chat, ask("Hello"))
    await chat.aclose()


async def test_corrupt_model_file_is_model_unavailable(tmp_path: Path) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\0" * 64)
    chat = EmbeddedChatModel(str(broken))
    with pytest.raises(BackendUnavailable, match="cannot load"):
        await chat.check()
    await chat.aclose()


async def test_closed_model_refuses_requests(tmp_path: Path) -> None:
    chat = EmbeddedChatModel(str(tmp_path / "absent.gguf"))
    await chat.aclose()
    await chat.aclose()
    with pytest.raises(BackendUnavailable, match="closed"):
        await collect(chat, ask("Hello"))
    with pytest.raises(BackendUnavailable, match="closed"):
        await chat.check()


def test_tool_results_render_as_facts_in_the_users_turn() -> None:
    turns = template_turns(
        [
            SYSTEM,
            ChatMessage("user", "Time in Paris and 2+2?"),
            ChatMessage(
                "assistant",
                tool_calls=(
                    ToolCallRequest("c1", "get_current_time", '{"timezone":"Europe/Paris"}'),
                    ToolCallRequest("c2", "calculate", '{"expression":"2+2"}'),
                ),
            ),
            ChatMessage("tool", "10:42", tool_call_id="c1"),
            ChatMessage("tool", "4", tool_call_id="c2", tool_name="calculate"),
        ]
    )
    nudge = "Using this result, answer the question above."
    assert [turn["role"] for turn in turns] == ["system", "user"]
    assert turns[1]["content"] == (
        f"Time in Paris and 2+2?\n\nget_current_time result: 10:42\n{nudge}"
        f"\n\ncalculate result: 4\n{nudge}"
    )


@pytest.mark.slow
async def test_after_a_tool_result_the_model_answers_with_it(model) -> None:
    call = ToolCallRequest("c1", "calculate", '{"expression":"17 * 23"}')
    messages = [
        SYSTEM,
        ChatMessage("user", "What is 17 * 23?"),
        ChatMessage("assistant", tool_calls=(call,)),
        ChatMessage("tool", '{"expression":"17 * 23","result":391}', tool_call_id="c1"),
    ]
    deltas = await collect(model, ChatRequest(messages, tool_choice="none", temperature=0))
    answer = "".join(delta.text for delta in deltas if isinstance(delta, TextDelta))
    assert "391" in answer and "{" not in answer  # the fact, not an echo of the call


def test_the_router_reads_the_users_words_not_the_results_after_them() -> None:
    search = ToolCallRequest("call_1", "search_knowledge_base", '{"query":"17 * 23"}')
    messages = [
        SYSTEM,
        ChatMessage("user", "What is 17 * 23?"),
        ChatMessage("assistant", tool_calls=(search,)),
        ChatMessage("tool", '{"hits": ["a long passage"]}', tool_call_id="call_1"),
    ]
    asked = template_turns(without_trailing_results(messages))
    assert asked[-1] == {"role": "user", "content": "What is 17 * 23?"}
    # The answer prompt still has the results.
    assert "a long passage" in template_turns(messages)[-1]["content"]


def test_grammar_schema_bounds_every_free_string() -> None:
    schema = {
        "type": "object",
        "properties": {
            "free": {"type": "string"},
            "code": {"type": "string", "enum": ["a", "b"]},
            "short": {"type": "string", "maxLength": 5},
            "long": {"type": "string", "maxLength": 100_000},
            "tags": {"type": "array", "items": {"type": "string"}},
        },
    }
    bounded = grammar_schema(schema)["properties"]
    assert bounded["free"]["maxLength"] > 0
    assert bounded["tags"]["items"]["maxLength"] > 0
    assert "maxLength" not in bounded["code"]
    assert bounded["short"]["maxLength"] == 5
    # A huge bound is lowered: llama.cpp's grammar sampler overflowed its stack on it.
    assert bounded["long"]["maxLength"] == bounded["free"]["maxLength"]
    assert "maxLength" not in schema["properties"]["free"]  # the tool's schema is untouched


def test_clamp_pulls_numbers_into_their_bounds() -> None:
    schema = {
        "type": "object",
        "properties": {
            "n": {"type": "integer", "minimum": 1, "maximum": 10},
            "xs": {"type": "array", "items": {"type": "number", "minimum": 0}},
            "flag": {"type": "boolean"},
        },
    }
    value = {"n": 10**15, "xs": [-2.5, 3.0], "flag": True, "extra": "kept"}
    assert clamp(value, schema) == {"n": 10, "xs": [0, 3.0], "flag": True, "extra": "kept"}


# With the model --------------------------------------------------------------------------------


@pytest.mark.slow
async def test_streams_text_and_usage(model: EmbeddedChatModel) -> None:
    assert isinstance(model, ChatModel)
    assert model.model == "SmolLM2-135M-Instruct.Q4_1"
    deltas = await collect(model, ask("Tell me about the moon."))
    assert_text_answer(deltas)
    assert len(deltas) > 3
    assert deltas[-1].output_tokens >= len(deltas) - 1  # every text delta is a token or more


@pytest.mark.slow
async def test_follow_up_turn_reuses_the_prompt_prefix(model: EmbeddedChatModel) -> None:
    first = ask("Name a colour.")
    deltas = await collect(model, first)
    follow_up = ChatRequest(
        [*first.messages, ChatMessage("assistant", text_of(deltas)), ChatMessage("user", "More?")]
    )
    usage = (await collect(model, follow_up))[-1]
    assert isinstance(usage, Usage)
    assert usage.cached_input_tokens >= deltas[-1].input_tokens - 1


@pytest.mark.slow
async def test_forced_tool_call_has_schema_valid_arguments(model: EmbeddedChatModel) -> None:
    tools = [CLOCK, CALCULATOR]
    deltas = await collect(
        model, ask("What is 17 * 23?", tools=tools, tool_choice="calculate", max_tokens=256)
    )
    assert assert_tool_call(deltas, tools) is CALCULATOR


@pytest.mark.slow
async def test_forced_tool_call_clamps_numbers_the_grammar_cannot(
    model: EmbeddedChatModel,
) -> None:
    deltas = await collect(
        model, ask("Roll a die.", tools=[DICE], tool_choice="roll_dice", max_tokens=256)
    )
    assert_tool_call(deltas, [DICE])


@pytest.mark.slow
@pytest.mark.parametrize("prompt", ["What time is it in Tokyo?", "Hi there! How are you?"])
async def test_auto_emits_a_valid_call_or_text(model: EmbeddedChatModel, prompt: str) -> None:
    tools = [CLOCK, CALCULATOR]
    deltas = await collect(model, ask(prompt, tools=tools, tool_choice="auto", max_tokens=256))
    if isinstance(deltas[0], ToolCallDelta):
        assert_tool_call(deltas, tools)
    else:
        assert_text_answer(deltas)


@pytest.mark.slow
async def test_required_always_calls_a_tool(model: EmbeddedChatModel) -> None:
    tools = [CLOCK, CALCULATOR]
    deltas = await collect(
        model, ask("Hi there!", tools=tools, tool_choice="required", max_tokens=256)
    )
    assert_tool_call(deltas, tools)


@pytest.mark.slow
async def test_tool_choice_none_answers_in_text_after_tool_results(
    model: EmbeddedChatModel,
) -> None:
    request = ChatRequest(
        [
            SYSTEM,
            ChatMessage("user", "What time is it in Paris?"),
            ChatMessage(
                "assistant",
                tool_calls=(ToolCallRequest("c1", "get_current_time", '{"timezone":"Paris"}'),),
            ),
            ChatMessage("tool", "10:42", tool_call_id="c1"),
        ],
        tools=[CLOCK],
        tool_choice="none",
    )
    assert_text_answer(await collect(model, request))


@pytest.mark.slow
async def test_unknown_forced_tool_is_a_model_error(model: EmbeddedChatModel) -> None:
    with pytest.raises(BackendError, match="not among the tools"):
        await collect(model, ask("Hi", tools=[CLOCK], tool_choice="calculate"))


@pytest.mark.slow
@pytest.mark.parametrize("how", ["aclose", "cancel task"])
async def test_cancelling_stops_generation_and_frees_the_model(
    model: EmbeddedChatModel, probe: GenerateProbe, how: str
) -> None:
    received: list[Delta] = []
    three = asyncio.Event()
    # The generation pauses after ten tokens while the test cancels: the cancellation lands
    # at a known token, not wherever a busy machine's scheduling puts it.
    probe.hold_after(10)
    stream = model.stream(LONG_STORY)

    async def consume() -> None:
        async for delta in stream:
            received.append(delta)
            if len(received) == 3:
                three.set()
                if how == "aclose":
                    return  # the stream is closed below, as `async for ... break` leaves it

    task = asyncio.create_task(consume())
    try:
        assert await asyncio.to_thread(probe.holding.wait, 60)
        async with asyncio.timeout(60):
            await three.wait()
        if how == "aclose":
            await task
            sampled_at_cancel = probe.tokens[0]
            await stream.aclose()
        else:
            sampled_at_cancel = probe.tokens[0]
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
    finally:
        probe.release()

    # The model is free: the next request runs (after the cancelled one has stopped).
    after = await asyncio.wait_for(collect(model, ask("Say hi.", max_tokens=8)), timeout=120)
    assert_text_answer(after)
    assert len(probe.tokens) == 2
    assert probe.tokens[0] <= sampled_at_cancel + 2  # stopped within a token or two
    assert probe.tokens[0] < LONG_STORY.max_tokens // 4


@pytest.mark.slow
async def test_concurrent_requests_are_serialised(
    model: EmbeddedChatModel, probe: GenerateProbe
) -> None:
    first, second = await asyncio.gather(
        collect(model, ask("Name a fruit.", max_tokens=24)),
        collect(model, ask("Name a tree.", max_tokens=24)),
    )
    assert_text_answer(first)
    assert_text_answer(second)
    assert len(probe.tokens) == 2
    assert probe.peak == 1  # the Llama object never served two requests at once
