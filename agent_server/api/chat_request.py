"""The body of ``POST /v1/chat/completions``: OpenAI's fields that Citadel honours, no others.

Every accepted field reaches the model as asked, so a field that cannot (``top_p``,
``response_format``, ``logprobs``, a function's ``strict``, ...) is refused with 422 naming
the accepted ones rather than silently dropped. The exceptions are fields with no effect on
the answer (``user``) and, in an assistant message, the fields of OpenAI's own answer that
clients send back with the history (``refusal``, ``annotations``, ``audio``,
``function_call``, and our ``reasoning_content`` and ``citations``): accepted, not used.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, model_validator

from agent_server.api.openai_compat import OpenAIModel
from agent_server.models.base import ChatMessage, ChatRequest, ToolCallRequest, ToolChoice, ToolSpec
from protocol.input import Id

ToolName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
MAX_TOKENS = 1_000_000


class TextPart(OpenAIModel):
    type: Literal["text"]
    text: str


def _text_parts_only(content: Any) -> Any:
    for part in content if isinstance(content, list) else ():
        kind = part.get("type") if isinstance(part, dict) else None
        if kind != "text":
            raise ValueError(f"only text content parts are accepted, not {kind!r}")
    return content


Content = Annotated[str | list[TextPart], BeforeValidator(_text_parts_only)]


def text_of(content: Content | None) -> str:
    """The text of a message: parts joined by newlines (only text parts are accepted)."""
    if content is None or isinstance(content, str):
        return content or ""
    return "\n".join(part.text for part in content)


class FunctionCall(OpenAIModel):
    name: ToolName
    arguments: str


class ToolCall(OpenAIModel):
    id: Id
    type: Literal["function"] = "function"
    function: FunctionCall


class SystemMessage(OpenAIModel):
    role: Literal["system", "developer"]
    content: Content


class UserMessage(OpenAIModel):
    role: Literal["user"]
    content: Content


class AssistantMessage(OpenAIModel):
    role: Literal["assistant"]
    content: Content | None = None
    tool_calls: list[ToolCall] | None = None
    # Sent back with the history by clients that append the answer's message as it came.
    refusal: str | None = None
    annotations: list[Any] | None = None
    audio: dict[str, Any] | None = None
    function_call: dict[str, Any] | None = None
    reasoning_content: str | None = None
    citations: list[Any] | None = None


class ToolMessage(OpenAIModel):
    role: Literal["tool"]
    content: Content
    tool_call_id: Id


Message = Annotated[
    SystemMessage | UserMessage | AssistantMessage | ToolMessage, Field(discriminator="role")
]


class FunctionDefinition(OpenAIModel):
    name: ToolName
    description: str | None = None
    parameters: dict[str, Any] | None = None


class FunctionTool(OpenAIModel):
    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(OpenAIModel):
    name: ToolName


class NamedToolChoice(OpenAIModel):
    type: Literal["function"]
    function: NamedFunction


class StreamOptions(OpenAIModel):
    include_usage: bool = False


class ChatCompletionRequest(OpenAIModel):
    """OpenAI's chat completion request, as far as Citadel honours it."""

    model: str = Field(max_length=200)
    messages: list[Message] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    tools: list[FunctionTool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    max_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS)
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS)
    temperature: float | None = Field(None, ge=0, le=2)
    n: int = Field(1, description="Only 1: one choice per request")
    user: str | None = Field(None, max_length=200, description="Accepted; not used")

    @model_validator(mode="after")
    def _coherent(self) -> ChatCompletionRequest:
        if self.n != 1:
            raise ValueError("n: one choice per request (n=1) only")
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options: only with stream=true")
        if self.max_tokens is not None and self.max_completion_tokens is not None:
            raise ValueError("give max_tokens or max_completion_tokens, not both")
        names = [tool.function.name for tool in self.tools or ()]
        if len(set(names)) != len(names):
            raise ValueError("tools: each function name once")
        if isinstance(self.tool_choice, NamedToolChoice) and (
            self.tool_choice.function.name not in names
        ):
            raise ValueError(f"tool_choice names {self.tool_choice.function.name!r}, not a tool")
        if self.tool_choice is not None and not names:
            raise ValueError("tool_choice: only with tools")
        return self

    @property
    def token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    @property
    def choice(self) -> ToolChoice:
        """``tool_choice`` as a backend takes it: a keyword or the name of the tool to call."""
        if isinstance(self.tool_choice, NamedToolChoice):
            return self.tool_choice.function.name
        return self.tool_choice or "auto"

    def chat_request(self) -> ChatRequest:
        """The request for the configured model: what the client asked, nothing added."""
        names: dict[str, str] = {}  # tool call id -> function name, for tool results
        messages = []
        for message in self.messages:
            if isinstance(message, SystemMessage):
                messages.append(ChatMessage("system", text_of(message.content)))
            elif isinstance(message, UserMessage):
                messages.append(ChatMessage("user", text_of(message.content)))
            elif isinstance(message, AssistantMessage):
                calls = tuple(
                    ToolCallRequest(call.id, call.function.name, call.function.arguments)
                    for call in message.tool_calls or ()
                )
                names.update((call.id, call.name) for call in calls)
                messages.append(ChatMessage("assistant", text_of(message.content), calls))
            else:
                messages.append(
                    ChatMessage(
                        "tool",
                        text_of(message.content),
                        tool_call_id=message.tool_call_id,
                        tool_name=names.get(message.tool_call_id),
                    )
                )
        return ChatRequest(
            messages,
            tools=[tool_spec(tool) for tool in self.tools or ()],
            tool_choice=self.choice,
            max_tokens=self.token_limit,
            temperature=self.temperature,
        )


def tool_spec(tool: FunctionTool) -> ToolSpec:
    function = tool.function
    parameters = function.parameters or {"type": "object", "properties": {}}
    return ToolSpec(function.name, function.description or "", parameters)
