"""OpenAI's chat completions: ``POST /v1/chat/completions`` and ``GET /v1/models``.

Two models answer. The configured chat model, by its name, gets exactly what the client
asked (messages, tools, ``tool_choice``, ``temperature``, ``max_tokens``), none of the
agent's prompt, tools or settings. ``citadel`` is the agent runtime (:mod:`.chat_agent`).

Errors keep our envelope, ``{"error": {"code", "message"}}``: the OpenAI SDKs pick their
exception class from the HTTP status and read ``error.message`` and ``error.code``. A model
that fails before its first delta is an HTTP error (503 ``model_unavailable``, 502
``model_error``, 504 ``timeout``): a streamed answer is held until its first delta for that.
After it, the stream ends with an ``{"error": ...}`` event, as OpenAI's do.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Header, Path
from pydantic import BaseModel
from starlette.responses import Response

from agent_server.api.chat_agent import (
    CITADEL_MODEL,
    THREAD_HEADER,
    AgentAnswer,
    run_input,
    stored_events,
)
from agent_server.api.chat_request import ChatCompletionRequest
from agent_server.api.chat_wire import Answer, ChunkEncoder, chunks, completion, completion_id
from agent_server.api.deps import ServicesDep
from agent_server.api.errors import refusals
from agent_server.api.guard import CALLER, RUNS
from agent_server.api.streams import EventStreamResponse, StreamSlot
from agent_server.auth.principals import Principal
from agent_server.backends.errors import BackendError
from agent_server.models.base import ChatModel, ChatRequest, Delta
from agent_server.runtime.loop import new_id
from agent_server.services import Services
from protocol.errors import Refusal
from protocol.input import InputLimits

router = APIRouter(tags=["OpenAI-compatible"])

ThreadHeader = Annotated[
    str | None,
    Header(
        alias=THREAD_HEADER,
        pattern=r"^[\x21-\x7e]{1,256}$",
        description="Model `citadel` only: run on this thread of the caller's, and store it",
    ),
]

COMPLETION_RESPONSES = {
    200: {
        "description": "A `chat.completion`, or with `stream: true` `chat.completion.chunk` "
        "events (`data: {...}`), then `data: [DONE]`",
        "content": {
            "application/json": {"schema": {"type": "object"}},
            "text/event-stream": {"schema": {"type": "string"}},
        },
    }
}


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ModelAnswer:
    """The configured chat model's answer to the client's request, as it is."""

    def __init__(self, model: ChatModel, request: ChatRequest) -> None:
        self.model = model.model
        self._chat_model = model
        self._request = request

    def deltas(self) -> AsyncIterator[Delta]:
        return self._chat_model.stream(self._request)

    def citations(self) -> None:
        return None


class PrimedDeltas:
    """An answer's deltas, the first one awaited by :meth:`start`: a model that fails
    before its first delta fails there, while an HTTP error can still be sent. Backend
    failures become refusals with their code; the answer ends with a ``timeout`` refusal
    once it has run ``seconds`` (checked as it streams: a silent backend is bounded by its
    own timeouts)."""

    def __init__(self, deltas: AsyncIterator[Delta], seconds: float) -> None:
        self._deltas = deltas
        self._seconds = seconds
        self._deadline = time.monotonic() + seconds
        self._first: Delta | None = None

    async def start(self) -> None:
        try:
            self._first = await anext(self._deltas, None)
        except BackendError as error:
            raise _refusal(error) from None

    async def __aiter__(self) -> AsyncIterator[Delta]:
        try:
            async with contextlib.aclosing(self._deltas) as deltas:
                if self._first is None:
                    return
                yield self._first
                async for delta in deltas:
                    if time.monotonic() > self._deadline:
                        message = f"the answer took longer than {self._seconds:g} s"
                        raise Refusal("timeout", message)
                    yield delta
        except BackendError as error:
            raise _refusal(error) from None


@router.post(
    "/v1/chat/completions",
    response_class=EventStreamResponse,
    responses=COMPLETION_RESPONSES
    | refusals(
        "invalid_json",
        "unsupported_media_type",
        "invalid_input",
        "too_many_messages",
        "too_many_tools",
        "model_not_found",
        "thread_not_found",
        "thread_busy",
        "interrupts_pending",
        "tampered_history",
        "too_many_streams",
        "storage_unavailable",
        "model_unavailable",
        "model_error",
        "timeout",
    ),
)
async def chat_completions(
    body: ChatCompletionRequest,
    services: ServicesDep,
    principal: Annotated[Principal, Depends(RUNS)],
    thread_id: ThreadHeader = None,
) -> Response:
    """OpenAI's chat completions, streamed or not, from the configured chat model or, as
    model `citadel`, from the agent (retrieval and backend tools; passages cited in
    `choices[0].message.citations`, or the last chunk's `delta.citations`)."""
    _check_counts(body, services.input_limits)
    owner = principal.user_id
    slot = StreamSlot(services, owner) if body.stream else None
    try:
        answer = await _answer(body, services, owner, thread_id)
        deltas = PrimedDeltas(answer.deltas(), services.settings.run_timeout)
        await deltas.start()
    except BaseException:
        if slot is not None:
            slot.release()
        raise
    id, created = completion_id(), int(time.time())
    if slot is None:
        content = await completion(answer, aiter(deltas), id, created)
        return Response(content, media_type="application/json")
    include_usage = body.stream_options is not None and body.stream_options.include_usage
    encoder = ChunkEncoder(id, created, answer.model)
    return EventStreamResponse(chunks(encoder, answer, aiter(deltas), include_usage), slot)


@router.get("/v1/models")
async def list_models(
    services: ServicesDep, principal: Annotated[Principal, Depends(CALLER)]
) -> ModelList:
    """The models this server answers with: the chat model, `citadel` (the agent) and the
    embedding model."""
    return ModelList(data=_cards(services))


@router.get("/v1/models/{model:path}", responses=refusals("model_not_found"))
async def get_model(
    model: Annotated[str, Path(max_length=200)],
    services: ServicesDep,
    principal: Annotated[Principal, Depends(CALLER)],
) -> ModelCard:
    for card in _cards(services):
        if card.id == model:
            return card
    raise Refusal("model_not_found", f"no model {model!r}")


def _cards(services: Services) -> list[ModelCard]:
    return [
        ModelCard(id=services.model.model, owned_by=services.model.provider),
        ModelCard(id=CITADEL_MODEL, owned_by="citadel"),
        ModelCard(id=services.embedder.model, owned_by=services.embedder.provider),
    ]


async def _answer(
    body: ChatCompletionRequest, services: Services, owner: str, thread_id: str | None
) -> Answer:
    if body.model == CITADEL_MODEL:
        return await _agent_answer(body, services, owner, thread_id)
    model = services.model
    if body.model.removesuffix(":latest") != model.model.removesuffix(":latest"):
        raise Refusal(
            "model_not_found",
            f"no chat model {body.model!r}; this server has {model.model!r} and {CITADEL_MODEL!r}",
        )
    if thread_id is not None:
        raise Refusal("invalid_input", f"{THREAD_HEADER}: only for model {CITADEL_MODEL!r}")
    return ModelAnswer(model, body.chat_request())


async def _agent_answer(
    body: ChatCompletionRequest, services: Services, owner: str, thread_id: str | None
) -> AgentAnswer:
    limits = services.input_limits
    if thread_id is None:
        input = run_input(body, new_id("thread"), limits, new_turn_only=False)
        events = services.agent.run(services.agent.prepare_unstored(input, owner))
    else:
        existing = await services.store.load(thread_id) is not None
        input = run_input(body, thread_id, limits, new_turn_only=existing)
        events = stored_events(await services.runs.start(owner, input))
    return AgentAnswer(events, {tool.name for tool in input.tools})


def _check_counts(body: ChatCompletionRequest, limits: InputLimits) -> None:
    for name, count, limit in (
        ("messages", len(body.messages), limits.max_messages),
        ("tools", len(body.tools or ()), limits.max_tools),
    ):
        if count > limit:
            raise Refusal(f"too_many_{name}", f"{name} has {count} items; the limit is {limit}")


def _refusal(error: BackendError) -> Refusal:
    return Refusal(error.code, str(error) or error.code)
