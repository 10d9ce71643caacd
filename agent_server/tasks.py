"""Stopping background tasks so that shutdown never hangs.

On Python 3.11 ``asyncio.wait_for`` can swallow a cancellation (CPython gh-86296), and
redis-py writes through it when a socket timeout is set: a task cancelled at that moment goes
on as if nothing happened, and ``await task`` never returns. So a task is cancelled again for
as long as it runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

RECANCEL_EVERY = 0.5  # seconds between cancellations of a task that goes on


async def stop_tasks(tasks: Iterable[asyncio.Task[object]]) -> None:
    """Cancel ``tasks`` and return once every one has ended (their errors are theirs)."""
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=RECANCEL_EVERY)
