"""The AG-UI faces: HTTP+SSE, WebSocket, connect (resume and hydrate), stop, capabilities.

Every face follows a run's event log; none of them runs anything. Errors found before the
first byte are HTTP (or WebSocket close) errors with a JSON body; after it, the stream itself
ends with RUN_ERROR.

A caller holds at most ``CITADEL_MAX_STREAMS_PER_USER`` open streams (429 ``too_many_streams``
beyond), and a stream lasts at most ``CITADEL_STREAM_MAX_DURATION``: then it ends without a
terminal event, and the client reconnects with ``Last-Event-ID`` and a fresh credential, so a
revoked session does not keep a stream open. The run itself goes on meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from agent_server.api.http import STREAM_TIME_LIMIT_CLOSE, parse_body, read_json, services_of
from agent_server.auth.principals import principal_of
from agent_server.runs.eventlog import EventLog
from agent_server.runs.manager import ActiveRun, RunManager, following
from agent_server.runtime.loop import approval_outcome
from agent_server.services import Services
from agent_server.store.base import PendingInterrupt, RunStatus
from protocol import events
from protocol.events import TERMINAL_TYPES, Event
from protocol.framing import (
    SSE_HEADERS,
    SSE_KEEPALIVE,
    SSE_MEDIA_TYPE,
    encode,
    event_id,
    parse_event_id,
    sse_frame,
)
from protocol.input import (
    Id,
    InputError,
    StrictModel,
    parse_run_input,
)
from protocol.versions import WireVersion, downgrade, wire_version


class ConnectRequest(StrictModel):
    """Join a thread: CopilotKit sends a whole RunAgentInput here; we need only these."""

    thread_id: Id
    protocol_version: str | None = None
    last_event_id: str | None = None


class StopRequest(StrictModel):
    thread_id: Id
    run_id: Id | None = None


# POST /agui ----------------------------------------------------------------------------------


async def run_sse(request: Request) -> Response:
    services = services_of(request)
    data = await read_json(request, services.settings.max_body_bytes)
    input = parse_run_input(data, services.input_limits)
    owner = principal_of(request).user_id
    with _stream_slot(services, owner) as slot:
        run = await services.runs.start(input, owner)
        version = wire_version(input.protocol_version)
        body = _follow_sse(services, run.log, run.start_seq, version, run, ())
        return _SlotStream(slot.keep(), body)


class _StreamSlot:
    """A caller's open-stream slot: freed on exit unless a response keeps it."""

    def __init__(self, services: Services, owner: str) -> None:
        self._streams = services.access.streams
        self._owner = owner
        self._kept = False

    def __enter__(self) -> _StreamSlot:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._kept:
            self.release()

    def keep(self) -> _StreamSlot:
        self._kept = True
        return self

    def release(self) -> None:
        self._streams.release(self._owner)


def _stream_slot(services: Services, owner: str) -> _StreamSlot:
    if not services.access.streams.acquire(owner):
        limit = services.settings.max_streams_per_user
        raise InputError(429, "too_many_streams", f"at most {limit} open streams per caller")
    return _StreamSlot(services, owner)


def _following_response(services: Services, owner: str, stream: AsyncIterator[bytes]) -> Response:
    """``stream`` (not started yet) as the response, in one of ``owner``'s stream slots."""
    with _stream_slot(services, owner) as slot:
        return _SlotStream(slot.keep(), stream)


class _SlotStream(StreamingResponse):
    """An SSE response that frees its slot however it ends (even if never started)."""

    def __init__(self, slot: _StreamSlot, body: AsyncIterator[bytes]) -> None:
        super().__init__(body, media_type=SSE_MEDIA_TYPE, headers=SSE_HEADERS)
        self._slot = slot

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._slot.release()


async def _follow_sse(
    services: Services,
    log: EventLog,
    after_seq: int,
    version: WireVersion,
    run: ActiveRun | None,
    prelude: Iterable[bytes],
) -> AsyncIterator[bytes]:
    settings = services.settings
    deadline = asyncio.get_running_loop().time() + settings.stream_max_duration
    with following(services.runs, run):
        for chunk in prelude:
            yield chunk
        async for batch in log.follow(
            after_seq,
            version,
            idle_timeout=settings.keepalive_interval,
            min_interval=settings.stream_flush_interval,
        ):
            yield b"".join(batch) if batch else SSE_KEEPALIVE
            if asyncio.get_running_loop().time() >= deadline:
                return  # the client resumes after the last event id, with a fresh credential


# POST /agui/connect --------------------------------------------------------------------------


async def connect(request: Request) -> Response:
    """Resume a run after ``Last-Event-ID``, or hydrate the thread and follow its live run."""
    services = services_of(request)
    data = await read_json(request, services.settings.max_body_bytes)
    body: ConnectRequest = parse_body(ConnectRequest, data)
    owner = principal_of(request).user_id
    version = wire_version(body.protocol_version)
    manager: RunManager = services.runs
    active = manager.active_run(body.thread_id)
    if active is not None and active.owner != owner:
        active = None  # someone else's thread looks like no thread at all

    last_event_id = request.headers.get("last-event-id") or body.last_event_id
    if last_event_id:
        return await _resume(services, body.thread_id, owner, last_event_id, version, active)

    record = await services.store.load(body.thread_id)
    if record is not None and record.owner != owner:
        record = None
    if record is None and active is None:
        raise InputError(404, "thread_not_found", f"no thread {body.thread_id!r}")
    hydrate_run_id = f"{body.thread_id}:hydrate"
    live: tuple[EventLog, int] | None = None
    if active is not None:
        messages, state, pending = active.history, active.prepared.state.value, []
        live = active.log, active.start_seq
    else:
        assert record is not None
        messages, state, pending = record.messages, record.state, record.pending_interrupts
        elsewhere = await manager.run_elsewhere(body.thread_id)
        if elsewhere is not None and elsewhere[0].owner == owner:
            pending = []  # the thread is in a run: its interrupts were answered
            live = elsewhere[1], elsewhere[0].start_seq
    prelude = _hydration(body.thread_id, hydrate_run_id, messages, state, pending, version)
    if live is None:
        return Response(b"".join(prelude), media_type=SSE_MEDIA_TYPE, headers=SSE_HEADERS)
    stream = _follow_sse(services, live[0], live[1], version, active, prelude)
    return _following_response(services, owner, stream)


async def _resume(
    services: Services,
    thread_id: str,
    owner: str,
    last_event_id: str,
    version: WireVersion,
    active: ActiveRun | None,
) -> Response:
    """Exactly the events after ``last_event_id``: from memory while the run is recent (a
    mirror if it runs on another worker), from the store after that (or after a restart)."""
    try:
        run_id, seq = parse_event_id(last_event_id)
    except ValueError as error:
        raise InputError(422, "invalid_event_id", str(error)) from None
    stored = await services.store.get_run(thread_id, run_id)
    if stored is None or stored.owner != owner:
        raise InputError(404, "run_not_found", f"no replayable run {run_id!r} on this thread")
    log = await services.runs.find_log(thread_id, run_id)
    stored_until = log.first_seq - 1 if log is not None else stored.last_seq
    prelude: list[bytes] = []
    if seq < stored_until or log is None:
        found = await services.store.read_events(thread_id, run_id, seq)
        if log is not None:
            found = found[: stored_until - seq]
        elif stored.status is RunStatus.FAILED and not _ends_run(found):
            # The worker died mid-run: say so, so the resumed stream still ends.
            found.append(encode(events.run_error("the server stopped during this run", "internal")))
        prelude = _stored_frames(run_id, seq + 1, found, version)
    if log is None:
        return Response(b"".join(prelude), media_type=SSE_MEDIA_TYPE, headers=SSE_HEADERS)
    run = active if active is not None and active.run_id == run_id else None
    after = max(seq, stored_until)
    stream = _follow_sse(services, log, after, version, run, prelude)
    return _following_response(services, owner, stream)


def _ends_run(stored: list[bytes]) -> bool:
    return bool(stored) and orjson.loads(stored[-1])["type"] in TERMINAL_TYPES


def _stored_frames(
    run_id: str, first_seq: int, stored: list[bytes], version: WireVersion
) -> list[bytes]:
    frames = []
    for seq, data in enumerate(stored, first_seq):
        if version is WireVersion.LEGACY:
            event = orjson.loads(data)
            shaped = downgrade(event)
            if shaped is None:
                continue
            if shaped is not event:
                data = encode(shaped)
        frames.append(sse_frame(data, event_id(run_id, seq)))
    return frames


def _hydration(
    thread_id: str,
    run_id: str,
    messages: list[dict[str, Any]],
    state: Any,
    pending: list[PendingInterrupt],
    version: WireVersion,
) -> list[bytes]:
    """A complete run that carries the thread as it is: history, state, open interrupts."""
    outcome = approval_outcome(pending) if pending else None
    prelude: list[Event] = [
        events.run_started(thread_id, run_id),
        events.messages_snapshot(messages),
        events.state_snapshot(state if state is not None else {}),
        events.run_finished(thread_id, run_id, outcome=outcome),
    ]
    frames = []
    for event in prelude:
        shaped = event if version is WireVersion.V1 else downgrade(event)
        if shaped is not None:
            frames.append(sse_frame(encode(shaped)))
    return frames


# POST /agui/stop -----------------------------------------------------------------------------


async def stop(request: Request) -> Response:
    services = services_of(request)
    data = await read_json(request, services.settings.max_body_bytes)
    body: StopRequest = parse_body(StopRequest, data)
    owner = principal_of(request).user_id
    run_id = await services.runs.stop(body.thread_id, owner, body.run_id)
    return JSONResponse({"threadId": body.thread_id, "runId": run_id, "status": "cancelled"})


# GET /agui/capabilities ----------------------------------------------------------------------


async def capabilities(request: Request) -> Response:
    services = services_of(request)
    return JSONResponse(services.capabilities())


# GET /agui/ws --------------------------------------------------------------------------------


async def run_ws(websocket: WebSocket) -> None:
    """One JSON event per text frame. The client sends a RunAgentInput to start a run and
    ``{"type": "stop"}`` to stop it; after a run ends the socket takes the next input.
    Errors before a run starts are a ``{"error": ...}`` frame and close code 4000 + status."""
    services = services_of(websocket)
    manager: RunManager = services.runs
    owner = principal_of(websocket).user_id
    try:
        slot = _stream_slot(services, owner)
    except InputError as error:
        await websocket.close(code=4000 + error.status, reason=error.code)
        return
    await websocket.accept()
    inbox: asyncio.Queue[str | None] = asyncio.Queue()
    reader = asyncio.create_task(_read_frames(websocket, inbox))
    try:
        async with asyncio.timeout(services.settings.stream_max_duration):
            while (frame := await inbox.get()) is not None:
                try:
                    input = parse_run_input(frame.encode(), services.input_limits)
                    run = await manager.start(input, owner)
                except InputError as error:
                    await _ws_error(websocket, error)
                    return
                version = wire_version(input.protocol_version)
                if not await _stream_run_ws(websocket, manager, run, version, inbox):
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
    manager: RunManager,
    run: ActiveRun,
    version: WireVersion,
    inbox: asyncio.Queue[str | None],
) -> bool:
    """Send the run's events while watching for stop frames; False if the client left."""

    async def watch_for_stop() -> None:
        while (frame := await inbox.get()) is not None:
            if _is_stop(frame):
                with contextlib.suppress(InputError):
                    await manager.stop(run.thread_id, run.owner, run.run_id)
            else:
                error = InputError(409, "thread_busy", "a run is active on this socket")
                await websocket.send_text(orjson.dumps(_error_body(error)).decode())
        raise WebSocketDisconnect()

    with following(manager, run):
        watcher = asyncio.create_task(watch_for_stop())
        try:
            async for batch in run.log.follow(run.start_seq, version, sse=False):
                for frame in batch:
                    await websocket.send_text(frame.decode())
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
            await inbox.put(message.get("text") or (message.get("bytes") or b"").decode())
    finally:
        await inbox.put(None)


def _is_stop(frame: str) -> bool:
    with contextlib.suppress(orjson.JSONDecodeError):
        data = orjson.loads(frame)
        return isinstance(data, dict) and str(data.get("type", "")).lower() == "stop"
    return False


def _error_body(error: InputError) -> dict[str, Any]:
    return {"error": {"code": error.code, "message": error.message}}


async def _ws_error(websocket: WebSocket, error: InputError) -> None:
    await websocket.send_text(orjson.dumps(_error_body(error)).decode())
    await websocket.close(code=4000 + error.status, reason=error.code)


routes = [
    Route("/agui", run_sse, methods=["POST"]),
    Route("/agui/connect", connect, methods=["POST"]),
    Route("/agui/stop", stop, methods=["POST"]),
    Route("/agui/capabilities", capabilities, methods=["GET"]),
    WebSocketRoute("/agui/ws", run_ws),
]
