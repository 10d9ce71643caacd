"""Waiting, bounded, for something a test cannot be notified of (another process's state)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

# Seconds before a wait fails instead of hanging. Generous: `make test` runs two lanes on two
# cores, and a lane running llama.cpp or Whisper can starve the other's event loop for seconds.
PATIENCE = 30.0


async def eventually(check: Callable[[], Awaitable[bool]]) -> None:
    """Poll ``check`` until it is true, for at most :data:`PATIENCE` seconds."""
    async with asyncio.timeout(PATIENCE):
        while not await check():  # noqa: ASYNC110 - a remote state offers nothing to await
            await asyncio.sleep(0.1)
