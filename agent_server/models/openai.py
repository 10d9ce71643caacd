"""Chat backend for any OpenAI-compatible ``/v1`` server (OpenAI, vLLM, llama_cpp.server,
Ollama's ``/v1``, LiteLLM, ...), streaming ``POST /chat/completions`` over SSE."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

import httpx
import orjson

from agent_server.backends.errors import BackendError
from agent_server.backends.resilience import (
    DEFAULT_RETRY,
    DEFAULT_TIMEOUTS,
    CircuitBreaker,
    ResilientHTTP,
    RetryPolicy,
    Timeouts,
    error_text,
    model_policies,
)
from agent_server.models.base import (
    ChatMessage,
    ChatRequest,
    Delta,
    ReasoningDelta,
    TextDelta,
    ToolCallDelta,
    ToolChoice,
    ToolSpec,
    Usage,
)
from agent_server.urls import redact_url

if TYPE_CHECKING:
    from agent_server.config import Settings

_CHOICE_KEYWORDS = ("auto", "none", "required")


def from_settings(settings: Settings) -> OpenAIChatModel:
    timeouts, retry = model_policies(settings)
    assert settings.llm_url and settings.llm_model  # Settings.problems() guarantees both
    api_key = settings.llm_api_key.get_secret_value() if settings.llm_api_key else None
    return OpenAIChatModel(
        settings.llm_url,
        settings.llm_model,
        api_key,
        timeouts=timeouts,
        retry=retry,
        breaker=CircuitBreaker(),
    )


class OpenAIChatModel:
    """Streams chat completions from ``base_url`` (which ends in ``/v1``).

    Servers differ in small ways this class absorbs: reasoning arrives as
    ``reasoning_content`` (DeepSeek, vLLM, llama.cpp) or ``reasoning`` (OpenRouter, Ollama);
    llama_cpp.server repeats a tool call's id and name in every fragment and never sends
    usage; it also answers validation errors with HTTP 500 and fails mid-stream by ending the
    body early, which surfaces here as a missing ``[DONE]``.
    """

    provider = "openai"

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        *,
        timeouts: Timeouts = DEFAULT_TIMEOUTS,
        retry: RetryPolicy = DEFAULT_RETRY,
        breaker: CircuitBreaker | None = None,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.breaker = breaker or CircuitBreaker()
        self._http = ResilientHTTP(
            f"openai-compatible server at {redact_url(self.base_url)}",
            timeouts=timeouts,
            retry=retry,
            breaker=self.breaker,
            http=http,
            api_key=api_key,
        )

    async def stream(self, request: ChatRequest) -> AsyncIterator[Delta]:
        url = f"{self.base_url}/chat/completions"
        async with self._http.stream_lines("POST", url, json=self._body(request)) as lines:
            calls = _ToolCallFragments()
            async for line in lines:
                if not line.startswith("data:"):
                    continue  # blank separators, ": ping" comments, "event:" fields
                data = line[5:].strip()
                if data == "[DONE]":
                    return
                for delta in self._deltas(data, calls):
                    yield delta
        raise BackendError(
            f"{self._http.name}: the stream ended without [DONE]; the server failed "
            "mid-stream (llama_cpp.server does this when the prompt exceeds its context)"
        )

    async def check(self) -> None:
        listing = await self._http.get_json(f"{self.base_url}/models")
        if not isinstance(listing, dict):
            raise BackendError(f"{self._http.name}: /models answered {str(listing)[:80]}")
        served = [m.get("id") for m in listing.get("data", []) if isinstance(m, dict)]
        if served and self.model not in served:
            raise BackendError(
                f"{self._http.name} does not serve model '{self.model}'; it serves: "
                + ", ".join(map(str, served[:20]))
            )

    async def aclose(self) -> None:
        await self._http.aclose()

    def _body(self, request: ChatRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": request.model or self.model,
            "messages": [_wire_message(m) for m in request.messages],
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if request.tools:
            body["tools"] = [function_tool(t) for t in request.tools]
            body["tool_choice"] = _wire_tool_choice(request.tool_choice)
        if request.max_tokens is not None:
            body["max_tokens"] = request.max_tokens
        if request.temperature is not None:
            body["temperature"] = request.temperature
        return body

    def _deltas(self, data: str, calls: _ToolCallFragments) -> Iterator[Delta]:
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise BackendError(f"{self._http.name}: malformed stream chunk {data[:80]!r}") from None
        if not isinstance(chunk, dict):
            raise BackendError(f"{self._http.name}: malformed stream chunk {data[:80]!r}")
        if chunk.get("error"):
            message = self._http.scrub(error_text(chunk))
            raise BackendError(f"{self._http.name}: error mid-stream: {message}")
        try:
            yield from _chunk_deltas(chunk, calls)
        except (AttributeError, TypeError, ValueError) as exc:
            raise BackendError(f"{self._http.name}: unexpected chunk shape: {exc}") from None


def function_tool(tool: ToolSpec) -> dict[str, Any]:
    """A tool in the OpenAI function-tool shape, which Ollama's ``/api/chat`` shares."""
    return {
        "type": "function",
        "function": {
            "name": tool.name,
            "description": tool.description,
            "parameters": tool.parameters,
        },
    }


def _wire_tool_choice(choice: ToolChoice) -> str | dict[str, Any]:
    if choice in _CHOICE_KEYWORDS:
        return choice
    return {"type": "function", "function": {"name": choice}}


def _wire_message(message: ChatMessage) -> dict[str, Any]:
    wire: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.tool_calls:
        wire["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
            for call in message.tool_calls
        ]
    if message.tool_call_id is not None:
        wire["tool_call_id"] = message.tool_call_id
    return wire


def _chunk_deltas(chunk: dict[str, Any], calls: _ToolCallFragments) -> Iterator[Delta]:
    for choice in chunk.get("choices") or ():
        delta = choice.get("delta") or {}
        if reasoning := delta.get("reasoning_content") or delta.get("reasoning"):
            yield ReasoningDelta(reasoning)
        if content := delta.get("content"):
            yield TextDelta(content)
        for position, fragment in enumerate(delta.get("tool_calls") or ()):
            if (call := calls.delta(fragment, position)) is not None:
                yield call
    if usage := chunk.get("usage"):
        completion = usage.get("completion_tokens_details") or {}
        prompt = usage.get("prompt_tokens_details") or {}
        yield Usage(
            input_tokens=int(usage.get("prompt_tokens") or 0),
            output_tokens=int(usage.get("completion_tokens") or 0),
            reasoning_tokens=completion.get("reasoning_tokens"),
            cached_input_tokens=prompt.get("cached_tokens"),
        )


class _ToolCallFragments:
    """Emits each call's id and name once. OpenAI sends them in the first fragment only,
    llama_cpp.server repeats them in every fragment; consumers concatenate what they get."""

    def __init__(self) -> None:
        self._ids: dict[int, str] = {}
        self._names: dict[int, str] = {}

    def delta(self, fragment: dict[str, Any], position: int) -> ToolCallDelta | None:
        index = fragment.get("index", position)
        function = fragment.get("function") or {}
        call_id = _new_value(self._ids, index, fragment.get("id"))
        name = _new_value(self._names, index, function.get("name"))
        arguments = function.get("arguments") or ""
        if call_id is None and name is None and not arguments:
            return None
        return ToolCallDelta(index=index, id=call_id, name=name, arguments=arguments)


def _new_value(seen: dict[int, str], index: int, value: str | None) -> str | None:
    if not value or seen.get(index) == value:
        return None
    seen[index] = value
    return value
