"""OllamaChatModel against a real Ollama server: opt-in, as none can run on our machines.

Set ``OLLAMA_URL`` (e.g. ``http://127.0.0.1:11434``) and ``OLLAMA_MODEL`` (a pulled model that
supports tools, e.g. ``qwen3:0.6b`` or ``llama3.2``).
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator

import pytest

from agent_server.models.base import (
    ChatMessage,
    ChatRequest,
    TextDelta,
    ToolCallDelta,
    ToolSpec,
    Usage,
)
from agent_server.models.ollama import OllamaChatModel

URL = os.environ.get("OLLAMA_URL")
MODEL = os.environ.get("OLLAMA_MODEL")

pytestmark = [
    pytest.mark.opt_in,
    pytest.mark.skipif(not (URL and MODEL), reason="set OLLAMA_URL and OLLAMA_MODEL"),
]


@pytest.fixture
async def model() -> AsyncIterator[OllamaChatModel]:
    assert URL and MODEL
    chat = OllamaChatModel(URL, MODEL, options={"seed": 1, "temperature": 0})
    await chat.check()
    yield chat
    await chat.aclose()


async def test_text_stream(model: OllamaChatModel) -> None:
    request = ChatRequest([ChatMessage("user", "Reply with one short friendly sentence.")])

    deltas = [d async for d in model.stream(request)]

    assert "".join(d.text for d in deltas if isinstance(d, TextDelta)).strip()
    usage = deltas[-1]
    assert isinstance(usage, Usage) and usage.input_tokens > 0 and usage.output_tokens > 0


async def test_tool_call_stream(model: OllamaChatModel) -> None:
    clock = ToolSpec(
        "get_current_time",
        "Get the current time in an IANA timezone",
        {
            "type": "object",
            "properties": {"timezone": {"type": "string"}},
            "required": ["timezone"],
        },
    )
    request = ChatRequest(
        [ChatMessage("user", "What time is it in UTC? Use the tool.")], tools=[clock]
    )

    calls = [d async for d in model.stream(request) if isinstance(d, ToolCallDelta)]

    assert calls, "the model answered without calling the tool"
    assert calls[0].name == "get_current_time" and calls[0].id
    assert isinstance(json.loads(calls[0].arguments), dict)
