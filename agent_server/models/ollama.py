"""Chat backend for Ollama's native ``POST /api/chat`` (NDJSON stream).

The native API, unlike Ollama's ``/v1``, exposes ``keep_alive``, ``think`` and model
options. Its tool calls differ from OpenAI's: arguments are JSON objects, calls arrive whole
(not in fragments) and may lack ids, and tool results are matched by ``tool_name``.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
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
    ToolSpec,
    Usage,
)
from agent_server.models.openai import function_tool
from agent_server.urls import redact_url

if TYPE_CHECKING:
    from agent_server.config import Settings


def from_settings(settings: Settings) -> OllamaChatModel:
    timeouts, retry = model_policies(settings)
    assert settings.llm_url and settings.llm_model  # Settings.problems() guarantees both
    return OllamaChatModel(
        settings.llm_url,
        settings.llm_model,
        keep_alive=settings.llm_keep_alive,
        timeouts=timeouts,
        retry=retry,
        breaker=CircuitBreaker(),
    )


class OllamaChatModel:
    """Streams chat turns from the Ollama server at ``base_url`` (its root, e.g.
    ``http://127.0.0.1:11434``).

    ``keep_alive`` is how long Ollama keeps the model loaded after a request (``"5m"``,
    seconds, ``0`` to unload, negative for ever); ``think`` enables reasoning on thinking
    models (``True``/``False`` or ``"low"``/``"medium"``/``"high"``; ``None`` leaves the model's
    default); ``options`` are Ollama model options (``num_ctx``, ``seed``, ...), over which a
    request's ``temperature`` and ``max_tokens`` (``num_predict``) win. Ollama cannot force a
    tool: a named ``tool_choice`` offers only that tool, ``"none"`` offers none.
    """

    provider = "ollama"

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        keep_alive: str | float = "5m",
        think: bool | str | None = None,
        options: Mapping[str, Any] | None = None,
        timeouts: Timeouts = DEFAULT_TIMEOUTS,
        retry: RetryPolicy = DEFAULT_RETRY,
        breaker: CircuitBreaker | None = None,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.keep_alive = keep_alive
        self.think = think
        self.options = dict(options or {})
        self.breaker = breaker or CircuitBreaker()
        self._http = ResilientHTTP(
            f"ollama at {redact_url(self.base_url)}",
            timeouts=timeouts,
            retry=retry,
            breaker=self.breaker,
            http=http,
        )

    async def stream(self, request: ChatRequest) -> AsyncIterator[Delta]:
        url = f"{self.base_url}/api/chat"
        body = self._body(request)
        async with self._http.stream_lines(
            "POST", url, json=body, describe_error=self._describe_error
        ) as lines:
            calls = 0
            async for line in lines:
                if not line.strip():
                    continue
                chunk = self._parse(line)
                for delta in self._deltas(chunk, calls):
                    if isinstance(delta, ToolCallDelta):
                        calls += 1
                    yield delta
                if chunk.get("done"):
                    return
        raise BackendError(f"{self._http.name}: the stream ended before its final (done) line")

    async def check(self) -> None:
        tags = await self._http.get_json(f"{self.base_url}/api/tags")
        if not isinstance(tags, dict):
            raise BackendError(f"{self._http.name}: /api/tags answered {str(tags)[:80]}")
        pulled = {
            name
            for entry in tags.get("models", [])
            for name in (entry.get("name"), entry.get("model"))
            if name
        }
        if self.model not in pulled and f"{self.model}:latest" not in pulled:
            raise BackendError(
                f"{self._http.name}: model '{self.model}' is not pulled; "
                f"run `ollama pull {self.model}`"
            )

    async def aclose(self) -> None:
        await self._http.aclose()

    def _describe_error(self, status: int, message: str) -> BackendError:
        """For ``/api/chat``, where 404 means the model is not pulled."""
        if status == 404:
            return BackendError(f"{message} (run `ollama pull {self.model}`)")
        return BackendError(message)

    def _parse(self, line: str) -> dict[str, Any]:
        try:
            chunk = orjson.loads(line)
        except orjson.JSONDecodeError:
            chunk = None
        if not isinstance(chunk, dict):
            raise BackendError(f"{self._http.name}: malformed stream line {line[:80]!r}")
        if "error" in chunk:
            raise BackendError(f"{self._http.name}: error mid-stream: {error_text(chunk)}")
        return chunk

    def _deltas(self, chunk: dict[str, Any], calls_so_far: int) -> list[Delta]:
        try:
            return list(_chunk_deltas(chunk, calls_so_far))
        except (AttributeError, TypeError, ValueError) as exc:
            raise BackendError(f"{self._http.name}: unexpected line shape: {exc}") from None

    def _body(self, request: ChatRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": request.model or self.model,
            "messages": _wire_messages(request.messages),
            "stream": True,
            "keep_alive": self.keep_alive,
        }
        if tools := _offered_tools(request):
            body["tools"] = [function_tool(t) for t in tools]
        if self.think is not None:
            body["think"] = self.think
        options = dict(self.options)
        if request.temperature is not None:
            options["temperature"] = request.temperature
        if request.max_tokens is not None:
            options["num_predict"] = request.max_tokens
        if options:
            body["options"] = options
        return body


def _offered_tools(request: ChatRequest) -> Sequence[ToolSpec]:
    if request.tool_choice == "none":
        return ()
    if request.tool_choice in ("auto", "required"):
        return request.tools
    return [t for t in request.tools if t.name == request.tool_choice]


def _wire_messages(messages: Sequence[ChatMessage]) -> list[dict[str, Any]]:
    """Ollama wants tool-call arguments as objects and tool results named by ``tool_name``;
    a tool message without a name gets it from the call it answers."""
    names = {call.id: call.name for m in messages for call in m.tool_calls}
    wire = []
    for message in messages:
        item: dict[str, Any] = {"role": message.role, "content": message.content}
        if message.tool_calls:
            item["tool_calls"] = [
                {"id": c.id, "function": {"name": c.name, "arguments": _arguments(c.arguments)}}
                for c in message.tool_calls
            ]
        if message.role == "tool":
            name = message.tool_name or names.get(message.tool_call_id or "")
            if name:
                item["tool_name"] = name
            if message.tool_call_id:
                item["tool_call_id"] = message.tool_call_id
        wire.append(item)
    return wire


def _arguments(text: str) -> dict[str, Any]:
    """The call's JSON text as an object; ``{}`` when a model wrote something unparsable, so
    one bad call in the history does not make every later request fail."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _chunk_deltas(chunk: dict[str, Any], calls_so_far: int) -> Iterator[Delta]:
    message = chunk.get("message") or {}
    if thinking := message.get("thinking"):
        yield ReasoningDelta(thinking)
    if content := message.get("content"):
        yield TextDelta(content)
    for index, call in enumerate(message.get("tool_calls") or (), start=calls_so_far):
        function = call.get("function") or {}
        arguments = function.get("arguments", {})
        yield ToolCallDelta(
            index=index,
            id=call.get("id") or f"call_{uuid.uuid4().hex[:24]}",
            name=function.get("name"),
            arguments=arguments if isinstance(arguments, str) else orjson.dumps(arguments).decode(),
        )
    if chunk.get("done"):
        yield Usage(
            input_tokens=int(chunk.get("prompt_eval_count") or 0),
            output_tokens=int(chunk.get("eval_count") or 0),
        )
