"""Events to the store in batches, off the stream's path.

The writer keeps no copy of events: every ``interval`` it reads, from each tracked run's
:class:`EventLog`, the events after those already written, and writes them for all runs in
one call. Emitting an event costs the stream nothing more than the log's append. A failed
write is retried with backoff, so a database hiccup delays persistence, never the stream;
batches of runs that ended meanwhile wait in memory, at most ``max_pending`` events of them,
past which the oldest are dropped, and said so in the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from agent_server.store.base import EventBatch, StorageUnavailable, ThreadStore
from protocol.versions import WireVersion

from .eventlog import EventLog

logger = logging.getLogger(__name__)

_MAX_BACKOFF = 5.0

RunKey = tuple[str, str]  # (thread id, run id)


class _Tracked:
    __slots__ = ("log", "written")

    def __init__(self, log: EventLog) -> None:
        self.log = log
        self.written = log.last_seq  # what the log holds now is the store's already

    def unwritten(self) -> EventBatch | None:
        """The events after ``written``, marked written (a failed write keeps the batch)."""
        last = self.log.last_seq
        if last == self.written:
            return None
        start, end = self.written - self.log.first_seq + 1, last - self.log.first_seq + 1
        events = self.log.frames(start, end, WireVersion.V1, sse=False)
        batch = EventBatch(self.log.thread_id, self.log.run_id, self.written + 1, events)
        self.written = last
        return batch


class EventWriter:
    def __init__(
        self, store: ThreadStore, *, interval: float = 0.1, max_pending: int = 1_000_000
    ) -> None:
        self._store = store
        self._interval = interval
        self._max_pending = max_pending
        self._runs: dict[RunKey, _Tracked] = {}
        self._failed: list[EventBatch] = []  # written by no run any more: retried as they are
        self._task: asyncio.Task[None] | None = None

    def track(self, key: RunKey, log: EventLog) -> None:
        """Write the events ``log`` receives from now on."""
        self._runs[key] = _Tracked(log)

    def take(self, key: RunKey) -> EventBatch | None:
        """The run's unwritten events, and stop tracking it: its end writes them itself."""
        tracked = self._runs.pop(key, None)
        return None if tracked is None else tracked.unwritten()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="event writer")

    async def close(self) -> None:
        """Stop, writing what is unwritten if the store takes it."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(StorageUnavailable):
            await self._flush()

    async def _run(self) -> None:
        delay = self._interval
        while True:
            await asyncio.sleep(delay)
            try:
                await self._flush()
                delay = self._interval
            except StorageUnavailable as error:
                delay = min(delay * 2, _MAX_BACKOFF)
                logger.warning("events not written yet (retry in %.1f s): %s", delay, error)
            except Exception:
                logger.exception("events could not be written and were dropped")

    async def _flush(self) -> None:
        batches, self._failed = self._failed, []
        batches += filter(None, (tracked.unwritten() for tracked in self._runs.values()))
        if not batches:
            return
        try:
            await self._store.append_events(batches)
        except StorageUnavailable:
            self._keep(batches)
            raise

    def _keep(self, batches: list[EventBatch]) -> None:
        # Older first: what is written next continues where these end.
        self._failed = batches + self._failed
        pending = sum(len(batch.events) for batch in self._failed)
        while pending > self._max_pending and self._failed:
            dropped = self._failed.pop(0)
            pending -= len(dropped.events)
            logger.error(
                "dropped %d unwritten events of run %s: the store has been unavailable too long",
                len(dropped.events),
                dropped.run_id,
            )
