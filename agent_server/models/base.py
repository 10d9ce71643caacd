"""The one interface every chat backend implements.

A backend turns a :class:`ChatRequest` into a stream of small deltas (text, reasoning,
tool-call fragments, usage). The runtime turns deltas into AG-UI events; backends know
nothing about AG-UI. Failures are raised as
:class:`~agent_server.backends.errors.BackendError` subclasses whose ``code`` is the stable
RUN_ERROR code the client sees.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

# Requests ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ToolCallRequest:
    """A call the assistant made earlier in the conversation; ``arguments`` is JSON text."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    tool_calls: tuple[ToolCallRequest, ...] = ()
    tool_call_id: str | None = None  # role "tool": the call this answers
    tool_name: str | None = None  # role "tool": Ollama wants the name, not the id


@dataclass(frozen=True, slots=True)
class ToolSpec:
    name: str
    description: str
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})


ToolChoice = Literal["auto", "none", "required"] | str  # or the name of one tool to force


@dataclass(frozen=True, slots=True)
class ChatRequest:
    messages: Sequence[ChatMessage]
    tools: Sequence[ToolSpec] = ()
    tool_choice: ToolChoice = "auto"
    max_tokens: int | None = None
    temperature: float | None = None
    # Another model of the same server (an agent's own); None: the backend's.
    model: str | None = None


# Stream deltas -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True)
class ReasoningDelta:
    text: str


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A fragment of tool call number ``index``: id and name come first, arguments in pieces."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int | None = None
    cached_input_tokens: int | None = None

    def __add__(self, more: Usage) -> Usage:
        """Both counts together: a run's model calls, a stream's usage reports."""

        def plus(a: int | None, b: int | None) -> int | None:
            return None if a is None and b is None else (a or 0) + (b or 0)

        return Usage(
            self.input_tokens + more.input_tokens,
            self.output_tokens + more.output_tokens,
            plus(self.reasoning_tokens, more.reasoning_tokens),
            plus(self.cached_input_tokens, more.cached_input_tokens),
        )


Delta = TextDelta | ReasoningDelta | ToolCallDelta | Usage


# The interface -------------------------------------------------------------------------------


@runtime_checkable
class ChatModel(Protocol):
    provider: str  # "openai", "ollama", "embedded": reported in TokenUsage and health
    model: str

    def stream(self, request: ChatRequest) -> AsyncIterator[Delta]:
        """Stream one assistant turn. Cancelling the consumer must stop the backend's work."""
        ...

    async def check(self) -> None:
        """Raise :class:`BackendError` if the backend cannot serve requests right now."""
        ...

    async def aclose(self) -> None: ...
