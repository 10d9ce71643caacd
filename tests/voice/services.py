"""Citadel's services on an event loop of their own, in a thread, as the LiveKit worker keeps
them (its jobs run on other loops): a test plays the job, on its own loop."""

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
from voice.services_loop import ServicesLoop


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
