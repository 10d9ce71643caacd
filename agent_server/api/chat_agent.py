"""The model named ``citadel``: the agent runtime behind OpenAI's chat completions.

The agent runs as it does for ``/agui``, with retrieval and the backend tools. What it does
on the server (its tool calls and their results) is not part of the OpenAI answer; the answer
is the agent's text, its reasoning, calls of the client's own ``tools`` (as ``tool_calls``,
the run then waits for their results as AG-UI frontend tools do) and the passages it cited
(``citations``).

Without :data:`THREAD_HEADER` nothing is stored: the run is prepared from the request's
messages alone (:meth:`~agent_server.runtime.loop.Agent.prepare_unstored`) and driven by the
request itself; no thread, run or event reaches the store, the event bus or the admin feed.
With the header the run goes through the run API like any AG-UI run, on the caller's thread:
stored, listed by ``GET /threads``, someone else's is 404. A thread that exists already holds
the conversation, so only the request's messages after its last assistant message are new.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import orjson

from agent_server.api.chat_request import (
    AssistantMessage,
    ChatCompletionRequest,
    Message,
    ToolMessage,
    text_of,
)
from agent_server.models.base import Delta, ReasoningDelta, TextDelta, ToolCallDelta, Usage
from agent_server.runs.service import RunStream
from agent_server.runtime.knowledge_tools import SEARCH_TOOL
from agent_server.runtime.loop import new_id
from protocol.errors import Refusal
from protocol.events import Event, EventType
from protocol.input import InputLimits, RunAgentInput, parse_run_input

CITADEL_MODEL = "citadel"
THREAD_HEADER = "X-Citadel-Thread-Id"


def run_input(
    body: ChatCompletionRequest, thread_id: str, limits: InputLimits, *, new_turn_only: bool
) -> RunAgentInput:
    """The AG-UI input of ``body``. ``new_turn_only``: the thread exists and holds the
    conversation, so only the messages after the request's last assistant message are new."""
    if body.tool_choice not in (None, "auto", "none"):
        raise Refusal(
            "invalid_input", f"tool_choice: model {CITADEL_MODEL!r} chooses its tools itself"
        )
    for name in ("temperature", "max_tokens", "max_completion_tokens"):
        if getattr(body, name) is not None:
            raise Refusal(
                "invalid_input",
                f"{name}: model {CITADEL_MODEL!r} runs with the server's settings; leave it out",
            )
    messages: list[Message] = body.messages
    if isinstance(messages[-1], AssistantMessage):
        raise Refusal("invalid_input", "messages: end with a user or tool message")
    answered = [i for i, m in enumerate(messages) if isinstance(m, AssistantMessage)]
    if new_turn_only and answered:
        messages = messages[answered[-1] + 1 :]
    tools = [] if body.tool_choice == "none" else body.tools or []
    data = {
        "threadId": thread_id,
        "runId": new_id("run"),
        "protocolVersion": "1.0",
        "messages": [_agui_message(message) for message in messages],
        "tools": [
            {
                "name": tool.function.name,
                "description": tool.function.description or "",
                "parameters": tool.function.parameters or {"type": "object", "properties": {}},
            }
            for tool in tools
        ],
    }
    return parse_run_input(data, limits)


def _agui_message(message: Message) -> dict[str, Any]:
    wire = {"id": new_id("msg"), "role": message.role, "content": text_of(message.content)}
    if isinstance(message, AssistantMessage) and message.tool_calls:
        wire["toolCalls"] = [call.model_dump() for call in message.tool_calls]
    if isinstance(message, ToolMessage):
        wire["toolCallId"] = message.tool_call_id
    return wire


async def stored_events(stream: RunStream) -> AsyncIterator[Event]:
    """The events of a run the run API drives; leaving early stops following it (the run
    goes on, as for a dropped AG-UI connection)."""
    async with contextlib.aclosing(aiter(stream)) as batches:
        async for batch in batches:
            for item in batch.events:
                yield item.event


class AgentAnswer:
    """A run's AG-UI events as an OpenAI answer (see the module's docstring)."""

    model = CITADEL_MODEL

    def __init__(self, events: AsyncIterator[Event], client_tools: set[str]) -> None:
        self._events = events
        self._client_tools = client_tools
        self._client_calls: dict[str, int] = {}  # tool call id -> its number in the answer
        self._searches: set[str] = set()  # ids of the runtime's knowledge-base searches
        self._hits: dict[tuple[str, str], dict[str, Any]] = {}  # (source, snippet) -> hit
        self._text: list[str] = []

    async def deltas(self) -> AsyncIterator[Delta]:
        async with contextlib.aclosing(self._events) as events:
            async for event in events:
                kind = event["type"]
                if kind == EventType.TEXT_MESSAGE_CONTENT:
                    self._text.append(event["delta"])
                    yield TextDelta(event["delta"])
                elif kind == EventType.TEXT_MESSAGE_START and self._text:
                    self._text.append("\n\n")  # the agent spoke again after a tool call
                    yield TextDelta("\n\n")
                elif kind == EventType.REASONING_MESSAGE_CONTENT:
                    yield ReasoningDelta(event["delta"])
                elif kind in (EventType.TOOL_CALL_START, EventType.TOOL_CALL_ARGS):
                    delta = self._tool_call(event)
                    if delta is not None:
                        yield delta
                elif kind == EventType.TOOL_CALL_RESULT and event["toolCallId"] in self._searches:
                    self._found(event["content"])
                elif kind == EventType.RUN_FINISHED and event.get("usage"):
                    yield _usage(event["usage"])
                elif kind == EventType.RUN_ERROR:
                    raise Refusal(event.get("code") or "internal", event["message"])

    def citations(self) -> list[dict[str, Any]]:
        """The passages whose source the answer names in brackets (``[docs/x.md]``, as the
        agent is told to cite); all it retrieved when it names none."""
        text = "".join(self._text)
        hits = list(self._hits.values())
        return [hit for hit in hits if f"[{hit['source']}]" in text] or hits

    def _tool_call(self, event: Event) -> ToolCallDelta | None:
        call_id = event["toolCallId"]
        if event["type"] == EventType.TOOL_CALL_ARGS:
            number = self._client_calls.get(call_id)
            return None if number is None else ToolCallDelta(number, arguments=event["delta"])
        name = event["toolCallName"]
        if name == SEARCH_TOOL:
            self._searches.add(call_id)
        if name not in self._client_tools:
            return None  # the server's own tool: run there, not the client's business
        number = self._client_calls[call_id] = len(self._client_calls)
        return ToolCallDelta(number, id=call_id, name=name)

    def _found(self, content: Any) -> None:
        try:
            result = orjson.loads(content) if isinstance(content, str) else {}
        except orjson.JSONDecodeError:
            return
        for hit in result.get("hits", ()) if isinstance(result, dict) else ():
            self._hits.setdefault((hit.get("source", ""), hit.get("snippet", "")), hit)


def _usage(entries: list[dict[str, Any]]) -> Usage:
    total = Usage()
    for entry in entries:
        total += Usage(
            entry.get("inputTokens", 0),
            entry.get("outputTokens", 0),
            entry.get("reasoningTokens"),
            entry.get("cachedInputTokens"),
        )
    return total
