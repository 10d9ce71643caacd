"""OpenAI's chat completion shapes, out: an answer's deltas as ``chat.completion.chunk`` SSE
frames, or gathered into one ``chat.completion``.

An :class:`Answer` is what a model says, whichever model it is (the configured backend, or
the agent runtime under the name ``citadel``): a stream of deltas, then the passages it
cited. Chunks are encoded with orjson around a prefix built once per answer: a streamed
token costs one small ``dumps`` and a few concatenations.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from agent_server.models.base import Delta, ReasoningDelta, TextDelta, ToolCallDelta, Usage
from protocol.errors import Refusal

logger = logging.getLogger(__name__)

DONE = b"data: [DONE]\n\n"
_END = b"}\n\n"


class Answer(Protocol):
    model: str  # the name the answer reports

    def deltas(self) -> AsyncIterator[Delta]:
        """The answer as it is produced; raises :class:`Refusal` when the model fails."""
        ...

    def citations(self) -> list[dict[str, Any]] | None:
        """Once the deltas have ended: the passages the answer cites (None: this model does
        not cite)."""
        ...


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


class ToolCallNumbers:
    """OpenAI numbers an answer's tool calls 0, 1, ... and gives each an id; backends number
    them their own way and some give no id."""

    def __init__(self) -> None:
        self._numbers: dict[int, int] = {}

    def number(self, delta: ToolCallDelta) -> tuple[int, str | None]:
        """The call's number, and its id if this is its first fragment."""
        number = self._numbers.get(delta.index)
        if number is not None:
            return number, None
        number = self._numbers[delta.index] = len(self._numbers)
        return number, delta.id or f"call_{uuid.uuid4().hex}"

    def __bool__(self) -> bool:
        return bool(self._numbers)


def usage_json(usage: Usage) -> dict[str, Any]:
    found: dict[str, Any] = {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
    }
    if usage.reasoning_tokens is not None:
        found["completion_tokens_details"] = {"reasoning_tokens": usage.reasoning_tokens}
    if usage.cached_input_tokens is not None:
        found["prompt_tokens_details"] = {"cached_tokens": usage.cached_input_tokens}
    return found


# Streamed -------------------------------------------------------------------------------------


class ChunkEncoder:
    """The SSE frames of one streamed answer."""

    def __init__(self, id: str, created: int, model: str) -> None:
        head = {"id": id, "object": "chat.completion.chunk", "created": created, "model": model}
        self._prefix = b"data: " + orjson.dumps(head)[:-1] + b',"choices":[{"index":0,"delta":'
        self._open = b',"finish_reason":null}]' + _END
        self._head = head
        self.calls = ToolCallNumbers()

    def role(self) -> bytes:
        return self._prefix + b'{"role":"assistant","content":""}' + self._open

    def delta(self, delta: TextDelta | ReasoningDelta | ToolCallDelta) -> bytes:
        if isinstance(delta, TextDelta):
            return self._prefix + b'{"content":' + orjson.dumps(delta.text) + b"}" + self._open
        if isinstance(delta, ReasoningDelta):
            text = orjson.dumps(delta.text)
            return self._prefix + b'{"reasoning_content":' + text + b"}" + self._open
        number, call_id = self.calls.number(delta)
        call: dict[str, Any] = {"index": number}
        if call_id is not None:
            call |= {"id": call_id, "type": "function"}
        name = {"name": delta.name} if delta.name else {}
        call["function"] = name | {"arguments": delta.arguments}
        return self._prefix + orjson.dumps({"tool_calls": [call]}) + self._open

    def finish(self, citations: list[dict[str, Any]] | None) -> bytes:
        reason = b'"tool_calls"' if self.calls else b'"stop"'
        delta = b"{}" if citations is None else orjson.dumps({"citations": citations})
        return self._prefix + delta + b',"finish_reason":' + reason + b"}]" + _END

    def usage(self, usage: Usage) -> bytes:
        chunk = self._head | {"choices": [], "usage": usage_json(usage)}
        return b"data: " + orjson.dumps(chunk) + b"\n\n"


async def chunks(
    encoder: ChunkEncoder, answer: Answer, deltas: AsyncIterator[Delta], include_usage: bool
) -> AsyncIterator[bytes]:
    """The streamed answer, ``data: [DONE]`` last. A failure after the first byte is an
    ``{"error": {"code", "message"}}`` event with no ``[DONE]`` after it (the OpenAI SDKs
    raise it as ``APIError``)."""
    yield encoder.role()
    usage: Usage | None = None
    try:
        async for delta in deltas:
            if isinstance(delta, Usage):
                usage = delta if usage is None else usage + delta
            else:
                yield encoder.delta(delta)
    except Refusal as error:
        yield _error_event(error)
        return
    except Exception:
        logger.exception("a streamed chat completion failed")
        yield _error_event(Refusal("internal", "internal error"))
        return
    yield encoder.finish(answer.citations())
    if include_usage and usage is not None:
        yield encoder.usage(usage)
    yield DONE


def _error_event(error: Refusal) -> bytes:
    body = {"error": {"code": error.code, "message": error.message}}
    return b"data: " + orjson.dumps(body) + b"\n\n"


# Gathered -------------------------------------------------------------------------------------


@dataclass
class _Call:
    id: str
    name: str = ""
    arguments: list[str] = field(default_factory=list)


async def completion(answer: Answer, deltas: AsyncIterator[Delta], id: str, created: int) -> bytes:
    """The whole answer as one ``chat.completion``; raises :class:`Refusal` if it fails."""
    text: list[str] = []
    reasoning: list[str] = []
    calls: list[_Call] = []
    numbers = ToolCallNumbers()
    usage: Usage | None = None
    async for delta in deltas:
        if isinstance(delta, TextDelta):
            text.append(delta.text)
        elif isinstance(delta, ReasoningDelta):
            reasoning.append(delta.text)
        elif isinstance(delta, ToolCallDelta):
            number, call_id = numbers.number(delta)
            if call_id is not None:
                calls.append(_Call(call_id))
            calls[number].name += delta.name or ""
            calls[number].arguments.append(delta.arguments)
        else:
            usage = delta if usage is None else usage + delta
    message: dict[str, Any] = {"role": "assistant", "content": "".join(text) or None}
    if calls:
        message["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": "".join(call.arguments)},
            }
            for call in calls
        ]
    elif message["content"] is None:
        message["content"] = ""
    if reasoning:
        message["reasoning_content"] = "".join(reasoning)
    citations = answer.citations()
    if citations is not None:
        message["citations"] = citations
    body: dict[str, Any] = {
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": answer.model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": "tool_calls" if calls else "stop",
                "logprobs": None,
            }
        ],
    }
    if usage is not None:
        body["usage"] = usage_json(usage)
    return orjson.dumps(body)
