"""The AG-UI faces: HTTP+SSE, WebSocket, connect (resume and hydrate), stop, capabilities.

Thin adapters over the run API (:mod:`agent_server.runs.service`): each parses its input,
asks the run API, and frames what comes back. Errors found before the first byte are HTTP
(or WebSocket close) errors with a JSON body; after it, the stream itself ends with
``RUN_ERROR``. The body of ``POST /agui`` is AG-UI's ``RunAgentInput``, read by hand: it
must stay tolerant of fields a newer client adds.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Header, Path
from pydantic import Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket, WebSocketDisconnect

from agent_server.agent_ids import DEFAULT_AGENT
from agent_server.api.deps import ServicesDep, read_json
from agent_server.api.errors import refusals, status_of
from agent_server.api.guard import CALLER, RUNS
from agent_server.api.models import RestBody, RestModel
from agent_server.api.openapi import json_body
from agent_server.api.streams import (
    STREAM_TIME_LIMIT_CLOSE,
    EventStreamResponse,
    StreamSlot,
    sse_response,
)
from agent_server.auth.principals import Principal
from agent_server.runs.service import RunStream
from agent_server.services import Services
from protocol.errors import Refusal
from protocol.framing import parse_event_id
from protocol.input import Id, RunAgentInput, parse_run_input
from protocol.versions import wire_version

router = APIRouter(tags=["AG-UI"])

SSE_RESPONSE = {
    200: {
        "description": "AG-UI events, one per `data:` line, each with `id: <runId>:<seq>`",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    }
}


class ConnectRequest(RestBody):
    """Join a thread. CopilotKit sends a whole RunAgentInput here: its other fields are
    ignored, so this body alone tolerates unknown fields."""

    model_config = RestBody.model_config | {"extra": "ignore"}

    thread_id: Id
    protocol_version: str | None = Field(None, pattern=r"^\d+(\.\d+)*$", max_length=32)
    last_event_id: str | None = Field(None, max_length=600)


class StopRequest(RestBody):
    thread_id: Id
    run_id: Id | None = None


class Stopped(RestModel):
    thread_id: str
    run_id: str
    status: str = "cancelled"


async def known_agent(agent_id: Annotated[str, Path(max_length=64)], services: ServicesDep) -> str:
    """The path's agent id, once the configuration has it (404 ``agent_not_found`` before
    the body is read)."""
    services.runs.manager.find_agent(agent_id)
    return agent_id


AgentId = Annotated[str, Depends(known_agent)]

RUN_REFUSALS = (
    "invalid_json",
    "unsupported_media_type",
    "invalid_input",
    "too_many_messages",
    "unknown_interrupt",
    "thread_not_found",
    "thread_busy",
    "interrupts_pending",
    "run_exists",
    "tampered_history",
    "too_many_streams",
    "storage_unavailable",
)


@router.post(
    "/agui",
    summary="Run the agent",
    response_class=EventStreamResponse,
    responses=SSE_RESPONSE | refusals(*RUN_REFUSALS),
    openapi_extra=json_body(RunAgentInput),
)
async def run_sse(
    request: Request, services: ServicesDep, principal: Annotated[Principal, Depends(RUNS)]
) -> Response:
    """Start a run of `RunAgentInput` by the `default` agent and stream its AG-UI events
    (`text/event-stream`). A request without `protocolVersion` is served the 0.0.59 dialect
    CopilotKit 1.7x speaks; `"protocolVersion": "1.0"` gets AG-UI 1.0."""
    return await start_sse(services, principal, await read_json(request))


@router.post(
    "/agui/agents/{agent_id}",
    summary="Run a configured agent",
    response_class=EventStreamResponse,
    responses=SSE_RESPONSE | refusals(*RUN_REFUSALS, "agent_not_found"),
    openapi_extra=json_body(RunAgentInput),
)
async def run_agent_sse(
    agent_id: AgentId,
    request: Request,
    services: ServicesDep,
    principal: Annotated[Principal, Depends(RUNS)],
) -> Response:
    """As `POST /agui`, by agent `agent_id` of the configuration's `agents` (its own
    instructions, tools, knowledge base and model); `default` is `POST /agui`'s."""
    return await start_sse(services, principal, await read_json(request), agent_id)


async def start_sse(
    services: Services, principal: Principal, body: Any, agent_id: str = DEFAULT_AGENT
) -> Response:
    """Start a run of ``body`` (a decoded RunAgentInput) and answer with its SSE stream;
    every refusal comes before anything starts."""
    input = parse_run_input(body, services.input_limits)
    slot = StreamSlot(services, principal.user_id)  # refused before anything starts
    try:
        stream = await services.runs.start(principal.user_id, input, agent_id)
    except BaseException:
        slot.release()
        raise
    return sse_response(services, principal.user_id, stream, slot)


@router.post(
    "/agui/connect",
    summary="Join a thread: resume a run, or hydrate the thread",
    response_class=EventStreamResponse,
    responses=SSE_RESPONSE
    | refusals(
        "invalid_json",
        "invalid_input",
        "invalid_event_id",
        "thread_not_found",
        "run_not_found",
        "too_many_streams",
        "storage_unavailable",
    ),
)
async def connect(
    body: ConnectRequest,
    services: ServicesDep,
    principal: Annotated[Principal, Depends(CALLER)],
    last_event_id: Annotated[str | None, Header(max_length=600)] = None,
) -> Response:
    """With `Last-Event-ID: <runId>:<seq>` (or `lastEventId`), exactly the events of that
    run after that one; without, the thread as it is (`MESSAGES_SNAPSHOT` and
    `STATE_SNAPSHOT` in a complete run), then its active run live if it has one."""
    owner = principal.user_id
    version = wire_version(body.protocol_version)
    resume_after = last_event_id or body.last_event_id
    if resume_after:
        try:
            run_id, seq = parse_event_id(resume_after)
        except ValueError as error:
            raise Refusal("invalid_event_id", str(error)) from None
        stream = await services.runs.resume(owner, body.thread_id, run_id, seq, version)
    else:
        stream = await services.runs.hydrate(owner, body.thread_id, version)
    return sse_response(services, owner, stream)


@router.post(
    "/agui/stop",
    summary="Stop the thread's active run",
    responses=refusals("invalid_input", "no_active_run", "unavailable", "timeout"),
)
async def stop(
    body: StopRequest, services: ServicesDep, principal: Annotated[Principal, Depends(CALLER)]
) -> Stopped:
    """Cancels the model and tool work at once, wherever the run runs; answers when its
    stream has ended (with the `cancelled` outcome)."""
    run_id = await services.runs.stop(principal.user_id, body.thread_id, body.run_id)
    return Stopped(thread_id=body.thread_id, run_id=run_id)


@router.get("/agui/capabilities", summary="AG-UI AgentCapabilities")
async def capabilities(
    services: ServicesDep, principal: Annotated[Principal, Depends(CALLER)]
) -> dict[str, Any]:
    return services.capabilities()


# GET /agui/ws --------------------------------------------------------------------------------


@router.websocket("/agui/ws")
async def run_ws(
    websocket: WebSocket, services: ServicesDep, principal: Annotated[Principal, Depends(RUNS)]
) -> None:
    """One JSON event per text frame. The client sends a RunAgentInput to start a run and
    ``{"type": "stop"}`` to stop it; after a run ends the socket takes the next input.
    Errors before a run starts are an ``{"error": ...}`` frame and close code 4000 + status."""
    owner = principal.user_id
    try:
        slot = StreamSlot(services, owner)
    except Refusal as error:
        await websocket.close(code=4000 + status_of(error.code), reason=error.code)
        return
    await websocket.accept()
    inbox: asyncio.Queue[str | None] = asyncio.Queue()
    reader = asyncio.create_task(_read_frames(websocket, inbox))
    try:
        async with asyncio.timeout(services.settings.stream_max_duration):
            while (frame := await inbox.get()) is not None:
                try:
                    input = parse_run_input(frame.encode(), services.input_limits)
                    stream = await services.runs.start(owner, input)
                except Refusal as error:
                    await _ws_error(websocket, error)
                    return
                if not await _stream_run_ws(websocket, services, owner, stream, inbox):
                    return
    except TimeoutError:  # reconnect with a fresh credential; a run goes on (see /agui/connect)
        await websocket.close(code=STREAM_TIME_LIMIT_CLOSE, reason="stream_time_limit")
    except WebSocketDisconnect:
        return
    finally:
        reader.cancel()
        slot.release()


async def _stream_run_ws(
    websocket: WebSocket,
    services: ServicesDep,
    owner: str,
    stream: RunStream,
    inbox: asyncio.Queue[str | None],
) -> bool:
    """Send the run's events while watching for stop frames; False if the client left."""

    async def watch_for_stop() -> None:
        while (frame := await inbox.get()) is not None:
            if _is_stop(frame):
                with contextlib.suppress(Refusal):
                    await services.runs.stop(owner, stream.thread_id, stream.run_id)
            else:
                busy = Refusal("thread_busy", "a run is active on this socket")
                await websocket.send_text(_error_frame(busy))
        raise WebSocketDisconnect()

    watcher = asyncio.create_task(watch_for_stop())
    try:
        async with contextlib.aclosing(aiter(stream)) as batches:
            async for batch in batches:
                for data in batch.data:
                    await websocket.send_text(data.decode())
                if watcher.done():
                    return False
    except WebSocketDisconnect:
        return False
    finally:
        watcher.cancel()
    return True


async def _read_frames(websocket: WebSocket, inbox: asyncio.Queue[str | None]) -> None:
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
            text = message.get("text")
            if text is None:
                text = (message.get("bytes") or b"").decode(errors="replace")
            await inbox.put(text)
    finally:
        await inbox.put(None)


def _is_stop(frame: str) -> bool:
    with contextlib.suppress(orjson.JSONDecodeError):
        data = orjson.loads(frame)
        return isinstance(data, dict) and str(data.get("type", "")).lower() == "stop"
    return False


def _error_frame(error: Refusal) -> str:
    return orjson.dumps({"error": {"code": error.code, "message": error.message}}).decode()


async def _ws_error(websocket: WebSocket, error: Refusal) -> None:
    await websocket.send_text(_error_frame(error))
    await websocket.close(code=4000 + status_of(error.code), reason=error.code)
