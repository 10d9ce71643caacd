"""Events to the store in batches, off the stream's path.

The run task only appends an event's frame to a buffer (a list append); a background task
writes what accumulated for every run in one call per ``interval``. A failed write keeps its
events and is retried with backoff, so a database hiccup delays persistence, never the stream.
During a long outage at most ``max_pending`` events wait in memory; past that the oldest are
dropped, and said so in the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from agent_server.store.base import EventBatch, StorageUnavailable, ThreadStore

logger = logging.getLogger(__name__)

_DATA = b"\ndata: "
_MAX_BACKOFF = 5.0

RunKey = tuple[str, str]  # (thread id, run id)


class _Pending:
    __slots__ = ("frames", "seq_from")

    def __init__(self, seq_from: int) -> None:
        self.seq_from = seq_from
        self.frames: list[bytes] = []


class EventWriter:
    def __init__(
        self, store: ThreadStore, *, interval: float = 0.1, max_pending: int = 1_000_000
    ) -> None:
        self._store = store
        self._interval = interval
        self._max_pending = max_pending
        self._pending: dict[RunKey, _Pending] = {}
        self._count = 0
        self._task: asyncio.Task[None] | None = None

    def add(self, key: RunKey, seq: int, frame: bytes) -> None:
        """Queue one SSE frame (the event log's bytes; the JSON is cut out when written)."""
        pending = self._pending.get(key)
        if pending is None:
            pending = self._pending[key] = _Pending(seq)
        pending.frames.append(frame)
        self._count += 1
        if self._count > self._max_pending:
            self._shed()

    def take(self, key: RunKey) -> EventBatch | None:
        """The run's queued events, removed: its end writes them in its own transaction."""
        pending = self._pending.pop(key, None)
        if pending is None:
            return None
        self._count -= len(pending.frames)
        return _batch(key, pending)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="event writer")

    async def close(self) -> None:
        """Stop, writing what is queued if the store takes it."""
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
        if not self._pending:
            return
        pending, self._pending = self._pending, {}
        count, self._count = self._count, 0
        try:
            await self._store.append_events([_batch(key, item) for key, item in pending.items()])
        except StorageUnavailable:
            self._requeue(pending, count)
            raise

    def _requeue(self, failed: dict[RunKey, _Pending], count: int) -> None:
        # Older events first: what arrived meanwhile continues where the failed batch ends.
        for key, newer in self._pending.items():
            if key in failed:
                failed[key].frames += newer.frames
            else:
                failed[key] = newer
        self._pending = failed
        self._count += count
        if self._count > self._max_pending:
            self._shed()

    def _shed(self) -> None:
        while self._count > self._max_pending and self._pending:
            key = next(iter(self._pending))
            dropped = self._pending.pop(key)
            self._count -= len(dropped.frames)
            logger.error(
                "dropped %d unwritten events of run %s: the store has been unavailable too long",
                len(dropped.frames),
                key[1],
            )


def _batch(key: RunKey, pending: _Pending) -> EventBatch:
    events = [frame[frame.index(_DATA) + len(_DATA) : -2] for frame in pending.frames]
    return EventBatch(key[0], key[1], pending.seq_from, events)
