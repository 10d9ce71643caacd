"""Run lifecycle: one active run per thread, runs that outlive their connections, stop.

A run is driven by its own task, not by the HTTP request that started it: events go to the
run's :class:`EventLog` and every connection merely follows the log. When the last follower
leaves, the run keeps going for a grace period so the client can reconnect with
``Last-Event-ID``; after that it is cancelled. Whatever ends a run, its stream ends with
everything closed and exactly one terminal event.

Persistence has two synchronous points and one asynchronous stream. The start (thread, run,
the client's new messages) is stored before the first byte; a run's end (its messages, state
and outcome, with its last events) is stored before its terminal event is sent, so a client
that saw RUN_FINISHED has it on record. Events in between go to the :class:`EventWriter`.
If the store cannot take a run's end within ``write_timeout``, the run ends with RUN_ERROR
``storage_unavailable`` and the thread stays busy until a background retry has stored it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from agent_server.runtime.loop import Agent, PreparedRun
from agent_server.store.base import EventBatch, RunEnd, StorageUnavailable, ThreadStore
from protocol import events
from protocol.events import Event
from protocol.framing import encode
from protocol.input import InputError, RunAgentInput
from protocol.lifecycle import Lifecycle, LifecycleError

from .eventlog import EventLog
from .writer import EventWriter, RunKey

logger = logging.getLogger(__name__)


class StopReason(Enum):
    REQUESTED = "requested"  # POST /agui/stop or a WebSocket stop frame
    ABANDONED = "abandoned"  # nobody reconnected within the grace period
    SHUTDOWN = "shutdown"


@dataclass(frozen=True)
class RunLimits:
    disconnect_grace: float = 30.0
    run_timeout: float = 600.0
    write_timeout: float = 10.0  # how long a run's end may wait for the store
    log_retention: float = 300.0  # seconds a finished run is replayed from memory, not the store
    max_retained_logs: int = 10_000


@dataclass(eq=False)
class ActiveRun:
    prepared: PreparedRun
    log: EventLog
    start_seq: int  # the log's last seq before this run (non-zero when a resume reuses a runId)
    history: list[dict]  # the thread's messages when the run started, for hydration
    task: asyncio.Task[None] | None = None
    followers: int = 0
    stop_reason: StopReason | None = None
    ended: bool = False  # the terminal event is in the log; nothing left to cancel
    store_retry: asyncio.Task[None] | None = None  # its end waits for the store to come back
    _grace: asyncio.TimerHandle | None = field(default=None, repr=False)

    @property
    def key(self) -> RunKey:
        return self.prepared.thread_id, self.prepared.run_id

    @property
    def thread_id(self) -> str:
        return self.prepared.thread_id

    @property
    def run_id(self) -> str:
        return self.prepared.run_id

    @property
    def owner(self) -> str:
        return self.prepared.record.owner


class RunManager:
    def __init__(
        self,
        agent: Agent,
        store: ThreadStore,
        writer: EventWriter,
        limits: RunLimits = RunLimits(),
    ) -> None:
        self.agent = agent
        self.store = store
        self.writer = writer
        self.limits = limits
        self._active: dict[str, ActiveRun | None] = {}  # None: reserved while preparing
        self.ended: list[Callable[[RunEnd], None]] = []  # told of each run's end, as sent
        self._logs: OrderedDict[RunKey, EventLog] = OrderedDict()
        self._unsaved: set[asyncio.Task[None]] = set()

    # Starting and stopping -------------------------------------------------------------------

    async def start(self, input: RunAgentInput, owner: str) -> ActiveRun:
        """Start a run, or raise :class:`InputError` / :class:`StorageUnavailable` having
        changed nothing."""
        if input.thread_id in self._active:
            raise InputError(409, "thread_busy", f"thread {input.thread_id!r} already has a run")
        self._active[input.thread_id] = None  # reserve before the first await
        try:
            prepared = await self.agent.prepare(input, owner)
            await self.store.start_run(self.agent.run_start(prepared))
        except BaseException:
            del self._active[input.thread_id]
            raise
        key = (input.thread_id, input.run_id)
        log = self._logs.get(key)
        if log is None:
            log = self._logs[key] = EventLog(*key, first_seq=prepared.previous_seq + 1)
        else:  # a resume that reuses the interrupted run's id continues its log
            log.reopen()
            self._logs.move_to_end(key)
        run = ActiveRun(
            prepared,
            log,
            start_seq=log.last_seq,
            history=[dict(message) for message in prepared.transcript.messages],
        )
        self._active[input.thread_id] = run
        self.writer.track(key, log)
        run.task = asyncio.create_task(self._drive(run), name=f"run {input.run_id}")
        return run

    async def stop(self, thread_id: str, owner: str, run_id: str | None = None) -> str:
        """Cancel the thread's active run at once and wait for its stream to end."""
        run = self._active.get(thread_id)
        if run is None or run.owner != owner or (run_id is not None and run.run_id != run_id):
            raise InputError(404, "no_active_run", f"thread {thread_id!r} has no active run")
        self._cancel(run, StopReason.REQUESTED)
        if run.task is not None:
            await asyncio.wait({run.task}, timeout=self.limits.write_timeout + 5)
        return run.run_id

    async def shutdown(self) -> None:
        runs = [run for run in self._active.values() if run is not None]
        for run in runs:
            self._cancel(run, StopReason.SHUTDOWN)
        tasks = {run.task for run in runs if run.task is not None} | self._unsaved
        if tasks:
            await asyncio.wait(tasks, timeout=self.limits.write_timeout + 5)
        for task in self._unsaved:
            task.cancel()

    def _cancel(self, run: ActiveRun, reason: StopReason) -> None:
        if run.stop_reason is None and not run.ended and run.task is not None:
            run.stop_reason = reason
            run.task.cancel()

    # Followers and the grace period ----------------------------------------------------------

    def attach(self, run: ActiveRun) -> None:
        run.followers += 1
        if run._grace is not None:
            run._grace.cancel()
            run._grace = None

    def detach(self, run: ActiveRun) -> None:
        run.followers -= 1
        if run.followers == 0 and not run.ended:
            run._grace = asyncio.get_running_loop().call_later(
                self.limits.disconnect_grace, self._cancel, run, StopReason.ABANDONED
            )

    # Lookups -------------------------------------------------------------------------------

    def active_run(self, thread_id: str) -> ActiveRun | None:
        return self._active.get(thread_id)

    def log(self, thread_id: str, run_id: str) -> EventLog | None:
        return self._logs.get((thread_id, run_id))

    # Driving a run ---------------------------------------------------------------------------

    async def _drive(self, run: ActiveRun) -> None:
        lifecycle = Lifecycle()
        ending: list[Event] = []
        try:
            async with asyncio.timeout(self.limits.run_timeout):
                async for event in self.agent.run(run.prepared):
                    lifecycle.observe(event)
                    if lifecycle.run_active:
                        self._emit(run, event)
                    else:
                        await self._end(run, event)
        except asyncio.CancelledError:
            if run.stop_reason is None:
                run.log.close()
                raise  # not ours: the event loop is going away
            asyncio.current_task().uncancel()
            if lifecycle.run_active:
                finished = events.run_finished(
                    run.thread_id, run.run_id, outcome=events.cancelled_outcome()
                )
                ending = [*lifecycle.closing_events(), finished]
        except TimeoutError:
            ending = self._failure(
                lifecycle, "timeout", f"the run took longer than {self.limits.run_timeout:g} s"
            )
        except LifecycleError:
            logger.exception("run %s produced an invalid stream", run.run_id)
            ending = [events.run_error("internal error", "internal")] if not run.ended else []
        except Exception:
            logger.exception("run %s failed", run.run_id)
            ending = self._failure(lifecycle, "internal", "internal error")
        try:
            for event in ending[:-1]:
                self._emit(run, event)
            if ending:
                await self._end(run, ending[-1])
        finally:
            run.log.close()
            if run._grace is not None:
                run._grace.cancel()
            if run.store_retry is None:
                self._release(run)

    @property
    def active_count(self) -> int:
        return sum(run is not None for run in self._active.values())

    def _emit(self, run: ActiveRun, event: Event) -> None:
        run.log.append(event)

    async def _end(self, run: ActiveRun, terminal: Event) -> None:
        """Store the run's end, then send its terminal event: what a client saw finish is on
        record. A store that does not answer in time turns the end into RUN_ERROR."""
        end = self._run_end(run, terminal)
        try:
            async with asyncio.timeout(self.limits.write_timeout):
                await self._store_end(end)
        except TimeoutError as error:
            logger.error("run %s ended but could not be stored in time: %s", run.run_id, error)
            terminal = events.run_error(
                "the answer could not be saved; the thread is read-only until storage is back",
                "storage_unavailable",
            )
            end = self._run_end(run, terminal, end.events)
            run.store_retry = asyncio.create_task(self._store_later(run, end))
            self._unsaved.add(run.store_retry)
            run.store_retry.add_done_callback(self._unsaved.discard)
        run.ended = True
        for observer in self.ended:
            observer(end)
        run.log.append(terminal)  # its JSON is in ``end``; the writer must not store it twice

    def _run_end(self, run: ActiveRun, terminal: Event, queued: EventBatch | None = None) -> RunEnd:
        seq = run.log.last_seq + 1
        if queued is None:
            queued = self.writer.take(run.key) or EventBatch(*run.key, seq, [])
        else:  # retrying: the same queued events, a different terminal event
            queued = EventBatch(*run.key, queued.seq_from, queued.events[:-1])
        batch = EventBatch(*run.key, queued.seq_from, [*queued.events, encode(terminal)])
        return self.agent.run_end(run.prepared, terminal, batch)

    async def _store_end(self, end: RunEnd, delay: float = 0.1, max_delay: float = 1.0) -> None:
        """Store ``end``, retrying with backoff for as long as the caller waits."""
        while True:
            try:
                await self.store.finish_run(end)
                return
            except StorageUnavailable as error:
                logger.warning("storing the end of run %s: %s", end.run_id, error)
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay)

    async def _store_later(self, run: ActiveRun, end: RunEnd) -> None:
        await self._store_end(end, delay=1.0, max_delay=30.0)
        logger.info("run %s stored after the outage", run.run_id)
        self._release(run)

    def _release(self, run: ActiveRun) -> None:
        if self._active.get(run.thread_id) is run:
            del self._active[run.thread_id]
        self._retire(run.log)

    @staticmethod
    def _failure(lifecycle: Lifecycle, code: str, message: str) -> list[Event]:
        if not lifecycle.run_active:
            return []  # the runtime already ended the run
        return [*lifecycle.closing_events(), events.run_error(message, code)]

    def _retire(self, log: EventLog) -> None:
        asyncio.get_running_loop().call_later(
            self.limits.log_retention, self._forget, log, log.last_seq
        )
        while len(self._logs) > self.limits.max_retained_logs:
            oldest_key, oldest = next(iter(self._logs.items()))
            if not oldest.closed:
                break
            del self._logs[oldest_key]

    def _forget(self, log: EventLog, last_seq: int) -> None:
        # A resume may have reopened and extended the log since: then its own timer decides.
        key = (log.thread_id, log.run_id)
        if self._logs.get(key) is log and log.closed and log.last_seq == last_seq:
            del self._logs[key]


@contextlib.contextmanager
def following(manager: RunManager, run: ActiveRun | None):
    """Count a connection as a follower of ``run`` for as long as it is open."""
    if run is not None:
        manager.attach(run)
    try:
        yield
    finally:
        if run is not None:
            manager.detach(run)
