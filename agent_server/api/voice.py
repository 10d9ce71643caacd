"""The voice faces: ``POST /voice/token`` (a LiveKit room with the voice agent dispatched in
it) and ``GET /voice/ws`` (voice straight from a browser, no LiveKit server; docs/voice.md).

Both speak in one of the caller's threads (a new one when none is named); a thread of
someone else's is ``thread_not_found``, as everywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import Annotated

from fastapi import APIRouter, Depends
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from agent_server.api.deps import ServicesDep
from agent_server.api.errors import refusals, status_of
from agent_server.api.guard import VOICE
from agent_server.api.models import RestBody, RestModel
from agent_server.api.streams import STREAM_TIME_LIMIT_CLOSE
from agent_server.auth.principals import Principal
from agent_server.config import Settings
from agent_server.services import Services
from protocol.errors import Refusal
from protocol.input import Id

logger = logging.getLogger("citadel.voice")

router = APIRouter(tags=["Voice"])
Caller = Annotated[Principal, Depends(VOICE)]


class VoiceTokenRequest(RestBody):
    thread_id: Id | None = None


class VoiceToken(RestModel):
    server_url: str
    participant_token: str
    room_name: str
    thread_id: str


@router.post(
    "/voice/token",
    responses=refusals("voice_unavailable", "thread_not_found", "storage_unavailable"),
)
async def voice_token(
    services: ServicesDep, principal: Caller, body: VoiceTokenRequest | None = None
) -> VoiceToken:
    """A LiveKit token for one room (the caller's identity, `CITADEL_VOICE_TOKEN_TTL`
    seconds) with the voice agent dispatched into it to speak in the thread."""
    settings = services.settings
    missing = settings.missing_livekit()
    if missing:
        raise Refusal("voice_unavailable", f"LiveKit is not configured: set {', '.join(missing)}")
    from voice.token import mint_room_token

    owner = principal.user_id
    thread_id = await _thread_of(services, owner, body.thread_id if body else None)
    assert settings.livekit_api_key and settings.livekit_api_secret and settings.livekit_url
    grant = mint_room_token(
        api_key=settings.livekit_api_key,
        api_secret=settings.livekit_api_secret.get_secret_value(),
        owner=owner,
        thread_id=thread_id,
        agent_name=settings.voice_agent_name,
        ttl=settings.voice_token_ttl,
    )
    return VoiceToken(
        server_url=settings.livekit_url,
        participant_token=grant.token,
        room_name=grant.room,
        thread_id=thread_id,
    )


async def _thread_of(services: Services, owner: str, thread_id: str | None) -> str:
    """``thread_id`` if it is the caller's or new; a fresh id when none is given."""
    if thread_id is None:
        return f"thread_{uuid.uuid4().hex}"
    record = await services.store.load(thread_id)
    if record is not None and record.owner != owner:
        raise Refusal("thread_not_found", f"no thread {thread_id!r}")
    return thread_id


# GET /voice/ws -------------------------------------------------------------------------------


class _StarletteSocket:
    """:class:`voice.browser.Socket` over Starlette's WebSocket."""

    def __init__(self, websocket: WebSocket) -> None:
        self._websocket = websocket

    async def receive(self) -> str | bytes | None:
        try:
            message = await self._websocket.receive()
        except (WebSocketDisconnect, RuntimeError):
            return None
        if message["type"] == "websocket.disconnect":
            return None
        return message["text"] if message.get("text") is not None else message.get("bytes", b"")

    async def send_text(self, text: str) -> None:
        await self._websocket.send_text(text)

    async def send_bytes(self, data: bytes) -> None:
        await self._websocket.send_bytes(data)

    async def close(self, code: int, reason: str) -> None:
        if self._websocket.application_state is not WebSocketState.DISCONNECTED:
            with contextlib.suppress(RuntimeError, WebSocketDisconnect):
                await self._websocket.close(code=code, reason=reason)


def _close_code(code: str) -> int:
    return 4000 + status_of(code)


@router.websocket("/voice/ws")
async def voice_ws(websocket: WebSocket, services: ServicesDep, principal: Caller) -> None:
    """Voice with no LiveKit server: PCM in, PCM, transcripts and AG-UI events out. The
    credential is the `Authorization` header, or a `token` query parameter (browsers)."""
    socket = _StarletteSocket(websocket)
    try:
        stack = speech_stack(services.settings)
    except RuntimeError as missing:
        await websocket.close(code=_close_code("voice_unavailable"), reason="voice_unavailable")
        logger.warning("voice refused: %s", missing)
        return
    await websocket.accept()
    from voice.browser import BrowserListener, Outbox, converse, read_start
    from voice.report import VoiceReport
    from voice.runtime_llm import Conversation
    from voice.session import VoiceSession
    from voice.wire import error_frame, frame

    owner = principal.user_id
    outbox = Outbox()
    try:
        start = await read_start(socket)
        thread_id = await _thread_of(services, owner, start.thread_id)
    except Refusal as refused:
        await socket.send_text(error_frame(refused))
        await socket.close(_close_code(refused.code), refused.code)
        return
    except ConnectionError:
        return
    listener = BrowserListener(outbox)
    session_id = f"voice_{uuid.uuid4().hex[:16]}"
    session = VoiceSession(
        stack,
        Conversation(services.runs, owner, thread_id, listener.agui),
        listener,
        report=VoiceReport(services.bus, services.metrics, session_id, owner, thread_id, "ws"),
        sample_rate=start.sample_rate,
    )
    outbox.put(frame("session.started", threadId=thread_id, sessionId=session_id))
    reason = "ended"
    try:
        async with asyncio.timeout(services.settings.stream_max_duration):
            await converse(socket, session, outbox, _close_code)
    except TimeoutError:
        reason = "stream_time_limit"
        await socket.close(STREAM_TIME_LIMIT_CLOSE, "stream_time_limit")
    finally:
        await session.aclose(reason)


def speech_stack(settings: Settings):  # -> voice.speech.stack.SpeechStack
    """The speech stack, loaded once per process; RuntimeError when it cannot be."""
    try:
        from voice.speech.stack import SpeechConfig, speech_stack
    except ImportError as missing:
        raise RuntimeError(f"the voice packages are not installed: {missing}") from None
    return speech_stack(SpeechConfig.from_settings(settings))
