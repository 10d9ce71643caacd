"""``citadel voice``: the LiveKit voice participant.

The worker registers with the LiveKit server under ``CITADEL_VOICE_AGENT_NAME``; a name turns
automatic dispatch off, so the agent joins only the rooms whose tokens ask for it (``POST
/voice/token``). A job is one room speaking in one user's thread, which the dispatch metadata
names; the server signed it into the user's token. The session (:mod:`voice.session`) hears
that user only, answers through the run API, and mirrors the runs' AG-UI events to the room
(:mod:`voice.room`).

Jobs run in threads of this process, not in a process each (livekit-agents' default), so
that one set of Citadel services (database pool, knowledge base, model) and one speech stack
serve every room; each job's loop reaches the services through :mod:`voice.services_loop`.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from livekit.agents import AgentServer, JobContext, JobExecutorType
from livekit.agents.voice.events import CloseEvent
from pydantic import ValidationError

from agent_server.config import ConfigError, Settings
from agent_server.models import create_chat_model
from agent_server.observability.logs import configure_logging
from agent_server.services import Services, start_services
from agent_server.store.base import StorageUnavailable
from protocol.errors import Refusal
from protocol.input import Id, StrictModel
from voice.report import VoiceReport
from voice.room import RoomMirror
from voice.runtime_llm import Conversation
from voice.services_loop import LoopFeed, LoopRuns, ServicesLoop
from voice.session import VoiceListener, VoiceSession
from voice.speech.stack import SpeechConfig, SpeechStack, speech_stack

logger = logging.getLogger("citadel.voice")

ROOM_SAMPLE_RATE = 24_000  # RoomIO publishes 24 kHz: speech made at that rate is not resampled


class Dispatch(StrictModel):
    """A job's metadata, as :func:`voice.token.dispatch_metadata` writes it."""

    thread_id: Id
    user_id: Id


def read_dispatch(metadata: str) -> Dispatch:
    """``invalid_input`` when the metadata is missing or is not what the server writes."""
    try:
        return Dispatch.model_validate_json(metadata or "null")
    except ValidationError:
        raise Refusal("invalid_input", "the job's metadata names no thread and user") from None


@dataclass
class VoiceWorker:
    """What every job shares: the services (on their loop) and the speech stack."""

    services: Services
    home: ServicesLoop
    stack: SpeechStack

    async def admit(self, metadata: str) -> Dispatch:
        """Whose thread a job speaks in. ``thread_not_found`` when it is someone else's, as
        ``POST /voice/token`` would have said (the thread may have changed hands since:
        deleted, then started by another user)."""
        dispatch = read_dispatch(metadata)
        try:
            record = await self.home.call(self.services.store.load(dispatch.thread_id))
        except StorageUnavailable as error:
            raise Refusal("storage_unavailable", f"the thread cannot be read: {error}") from None
        if record is not None and record.owner != dispatch.user_id:
            raise Refusal("thread_not_found", f"no thread {dispatch.thread_id!r}")
        return dispatch

    def session(
        self, session_id: str, dispatch: Dispatch, on_event: Callable[[bytes], Awaitable[None]]
    ) -> VoiceSession:
        """A voice session in the dispatch's thread; its runs' AG-UI events go to
        ``on_event``. This process serves no ``/metrics``: the report only notes."""
        user, thread = dispatch.user_id, dispatch.thread_id
        feed = LoopFeed(self.services.bus, self.home)
        return VoiceSession(
            self.stack,
            Conversation(LoopRuns(self.services.runs, self.home), user, thread, on_event),
            VoiceListener(),  # RoomIO publishes the transcripts and the agent's state
            report=VoiceReport(feed, None, session_id, user, thread, "livekit"),
            sample_rate=ROOM_SAMPLE_RATE,
        )

    async def job(self, ctx: JobContext) -> None:
        """One room. A job whose dispatch does not name a thread of its user ends at once,
        without joining; otherwise it lasts until the session closes (the user left)."""
        try:
            dispatch = await self.admit(ctx.job.metadata)
        except Refusal as refused:
            logger.warning("voice job %s refused (%s): %s", ctx.job.id, refused.code, refused)
            ctx.shutdown(reason=refused.code)
            return
        mirror = RoomMirror(ctx.room)
        voice = self.session(ctx.job.id, dispatch, mirror)

        async def close(reason: str) -> None:
            try:
                await voice.aclose(reason)
            finally:
                await mirror.aclose()

        def closed(event: CloseEvent) -> None:
            ctx.shutdown(reason=event.reason.value)

        ctx.add_shutdown_callback(close)
        voice.session.on("close", closed)
        await voice.start(room=ctx.room, participant=dispatch.user_id)


def agent_server(settings: Settings, worker: VoiceWorker, health_port: int = 0) -> AgentServer:
    """The LiveKit worker; its health server on loopback (livekit-agents binds every
    interface by default), on ``health_port`` (0: any free port)."""
    assert settings.livekit_url and settings.livekit_api_key and settings.livekit_api_secret
    server = AgentServer(
        job_executor_type=JobExecutorType.THREAD,  # one set of services for every room
        ws_url=settings.livekit_url,
        api_key=settings.livekit_api_key,
        api_secret=settings.livekit_api_secret.get_secret_value(),
        host="127.0.0.1",
        port=health_port,
    )
    server.rtc_session(worker.job, agent_name=settings.voice_agent_name)
    return server


def check(settings: Settings) -> None:
    """:class:`ConfigError` naming what keeps the worker from starting, before anything is
    loaded or connected."""
    missing = settings.missing_livekit()
    if missing:
        raise ConfigError(f"the voice worker needs a LiveKit server: set {', '.join(missing)}")
    problems = settings.problems()
    if problems:
        raise ConfigError(*problems)


async def serve_rooms(settings: Settings, health_port: int = 0) -> None:
    """Run the worker until SIGINT or SIGTERM; rooms in progress then end."""
    check(settings)
    try:
        stack = speech_stack(SpeechConfig.from_settings(settings))  # once, before any job
    except RuntimeError as missing:
        raise ConfigError(str(missing)) from None
    _warn_of_embedded_backends(settings)
    # The server seeds the knowledge base with the demo docs; the worker only reads it.
    settings = settings.model_copy(update={"demo_docs": None})
    services = await start_services(settings, create_chat_model(settings))
    try:
        worker = VoiceWorker(services, ServicesLoop(asyncio.get_running_loop()), stack)
        await _until_stopped(agent_server(settings, worker, health_port))
    finally:
        await services.aclose()


def _warn_of_embedded_backends(settings: Settings) -> None:
    """The worker is a process of its own, beside ``citadel serve``: what the two cannot
    share unless they are given servers."""
    if settings.qdrant_url is None and settings.retrieval != "off":
        logger.warning(
            "no QDRANT_URL: the embedded vector store allows one process per data directory; "
            "while `citadel serve` holds it, voice answers go without the knowledge base"
        )
    if settings.redis_url is None:
        logger.warning(
            "no REDIS_URL: the server's admin feed and chat panels will not see this worker's "
            "voice runs as they happen, and a thread may get a run here and one there at once"
        )


async def _until_stopped(server: AgentServer) -> None:
    loop = asyncio.get_running_loop()
    stopped = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopped.set)
    running = asyncio.create_task(server.run())
    waiting = asyncio.create_task(stopped.wait())
    try:
        await asyncio.wait({running, waiting}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiting.cancel()
        await server.aclose()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    await running  # the worker's own failure (LiveKit unreachable), if that is why it ended


def run_voice_worker(settings: Settings, health_port: int = 0) -> int:
    """``citadel voice``."""
    configure_logging(settings)
    asyncio.run(serve_rooms(settings, health_port))
    return 0
