"""Citadel's services on an event loop of their own, in a thread, as the LiveKit worker keeps
them (its jobs run on other loops): a test plays the job, on its own loop. And the worker
itself on them, registered with a real LiveKit server (the opt-in room tests)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

from agent_server.config import Settings
from agent_server.models.base import ChatModel
from agent_server.services import Services, start_services
from tests.conftest import isolated_settings
from tests.support.waiting import PATIENCE
from voice.services_loop import ServicesLoop
from voice.speech.stack import SpeechConfig, speech_stack
from voice.worker import VoiceWorker, agent_server


@contextlib.asynccontextmanager
async def services_on_their_loop(
    make_model: Callable[[], ChatModel], **settings: Any
) -> AsyncIterator[tuple[Services, ServicesLoop]]:
    """Services on a fresh schema of the local Postgres and a fresh data directory (unless
    the settings say otherwise), without the demo docs; the model is made on their loop."""
    async with contextlib.AsyncExitStack() as stack:
        settings = await isolated_settings(stack, settings)
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="citadel-services", daemon=True)
        thread.start()
        try:
            home = ServicesLoop(loop)
            services = await home.call(_open(Settings(**settings), make_model))
            try:
                yield services, home
            finally:
                await home.call(services.aclose())
        finally:
            loop.call_soon_threadsafe(loop.stop)
            await asyncio.to_thread(thread.join)
            loop.close()


async def _open(settings: Settings, make_model: Callable[[], ChatModel]) -> Services:
    return await start_services(settings, make_model())


@contextlib.asynccontextmanager
async def voice_worker(
    make_model: Callable[[], ChatModel], livekit: Settings, **settings: Any
) -> AsyncIterator[tuple[Services, ServicesLoop]]:
    """The voice worker on :func:`services_on_their_loop` (``settings``), registered with
    the LiveKit server of ``livekit`` under its ``voice_agent_name``; stopped when the block
    ends."""
    async with services_on_their_loop(make_model, **settings) as (services, home):
        stack = speech_stack(SpeechConfig.from_settings(services.settings))
        server = agent_server(livekit, VoiceWorker(services, home, stack))
        registered = asyncio.Event()
        server.on("worker_registered", lambda *_: registered.set())
        # devmode: no load shedding, a busy test machine must not turn the job away
        running = asyncio.create_task(server.run(devmode=True))
        try:
            async with asyncio.timeout(PATIENCE):
                await registered.wait()
            yield services, home
        finally:
            await server.aclose()
            await running
