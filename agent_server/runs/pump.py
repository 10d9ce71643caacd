"""Events from the run logs to a sink (the store, the bus) in batches, off the stream's path.

A pump keeps no copy of events: when a tracked :class:`EventLog` has news it waits
``interval`` for more, then reads from each log that had news the events after those already
pumped and hands them all to its sink in one call (a flush costs what changed, not what is
tracked: a thousand quiet runs cost nothing). Emitting an event costs the stream nothing
more than the log's append. A sink that is unavailable is retried with backoff, so an outage
delays the copy, never the stream; batches of runs that ended meanwhile wait in memory, at
most ``max_pending`` events of them, past which the oldest are dropped, and said so in the
log. A closed log is pumped one last time and then forgotten.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from agent_server.store.base import EventBatch
from agent_server.tasks import stop_tasks

from .eventlog import EventLog

logger = logging.getLogger(__name__)

_MAX_BACKOFF = 5.0

RunKey = tuple[str, str]  # (thread id, run id)
Sink = Callable[[list[EventBatch]], Awaitable[None]]


class _Tracked:
    __slots__ = ("log", "owner", "pumped")

    def __init__(self, log: EventLog, owner: str) -> None:
        self.log = log
        self.owner = owner
        self.pumped = log.last_seq  # what the log holds now is the sink's already

    def unpumped(self) -> EventBatch | None:
        """The events after ``pumped``, marked pumped (a failed call keeps the batch)."""
        last = self.log.last_seq
        if last == self.pumped:
            return None
        start, end = self.pumped - self.log.first_seq + 1, last - self.log.first_seq + 1
        events = self.log.encoded(start, end)
        log = self.log
        batch = EventBatch(log.thread_id, log.run_id, self.pumped + 1, events, self.owner)
        self.pumped = last
        return batch


class LogPump:
    def __init__(
        self,
        name: str,
        sink: Sink,
        unavailable: type[Exception] | tuple[type[Exception], ...],
        *,
        interval: float = 0.1,
        max_pending: int = 1_000_000,
    ) -> None:
        """``unavailable``: the errors that mean "try again later"; any other drops the batch."""
        self.name = name
        self._sink = sink
        self._unavailable = unavailable
        self._interval = interval
        self._max_pending = max_pending
        self._runs: dict[RunKey, _Tracked] = {}
        self._changed: dict[RunKey, None] = {}  # runs with news since the last flush, in order
        self._failed: list[EventBatch] = []  # pumped by no run any more: retried as they are
        self._news = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._behind_since: float | None = None  # monotonic time of the first failed call

    def track(self, log: EventLog, owner: str = "") -> None:
        """Pump the events ``log`` receives from now on."""
        self._runs[(log.thread_id, log.run_id)] = _Tracked(log, owner)
        log.listeners.append(self._noticed)

    def take(self, key: RunKey) -> EventBatch | None:
        """The run's unpumped events, and stop tracking it: the caller sends them itself."""
        tracked = self._runs.pop(key, None)
        if tracked is None:
            return None
        self._forget(tracked)
        return tracked.unpumped()

    def _noticed(self, log: EventLog) -> None:
        self._changed[(log.thread_id, log.run_id)] = None
        self._news.set()

    def requeue(self, batch: EventBatch) -> None:
        """A batch the caller could not send after all: the pump retries it."""
        self._keep([batch])
        self._news.set()

    @property
    def lag(self) -> float:
        """Seconds the sink has been refusing events (0 while it takes them)."""
        return 0.0 if self._behind_since is None else time.monotonic() - self._behind_since

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"{self.name} pump")

    async def close(self) -> None:
        """Stop, sending what is unsent if the sink takes it."""
        if self._task is not None:
            await stop_tasks([self._task])
        with contextlib.suppress(*_as_tuple(self._unavailable)):
            await self._flush()

    async def _run(self) -> None:
        delay = self._interval
        while True:
            if not self._failed:
                await self._news.wait()
            await asyncio.sleep(delay)
            self._news.clear()
            try:
                await self._flush()
                delay = self._interval
            except self._unavailable as error:
                delay = min(max(delay, 0.05) * 2, _MAX_BACKOFF)
                logger.warning(
                    "%s: events not sent yet (retry in %.1f s): %s", self.name, delay, error
                )
            except Exception:
                logger.exception("%s: events could not be sent and were dropped", self.name)

    async def _flush(self) -> None:
        batches, self._failed = self._failed, []
        changed, self._changed = self._changed, {}
        for key in changed:
            tracked = self._runs.get(key)
            if tracked is None:
                continue  # taken meanwhile
            batch = tracked.unpumped()
            if batch is not None:
                batches.append(batch)
            if tracked.log.closed:
                del self._runs[key]
                self._forget(tracked)
        if not batches:
            return
        try:
            await self._sink(batches)
        except self._unavailable:
            self._keep(batches)
            raise
        self._behind_since = None

    def _forget(self, tracked: _Tracked) -> None:
        with contextlib.suppress(ValueError):
            tracked.log.listeners.remove(self._noticed)

    def _keep(self, batches: list[EventBatch]) -> None:
        # Older first: what is sent next continues where these end.
        if self._behind_since is None:
            self._behind_since = time.monotonic()
        self._failed = batches + self._failed
        pending = sum(len(batch.events) for batch in self._failed)
        while pending > self._max_pending and self._failed:
            dropped = self._failed.pop(0)
            pending -= len(dropped.events)
            logger.error(
                "%s: dropped %d unsent events of run %s: unavailable too long",
                self.name,
                len(dropped.events),
                dropped.run_id,
            )


def _as_tuple(
    errors: type[Exception] | tuple[type[Exception], ...],
) -> tuple[type[Exception], ...]:
    return errors if isinstance(errors, tuple) else (errors,)
