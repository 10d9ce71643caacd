"""Run lifecycle: one active run per thread, runs that outlive their connections, stop.

A run is driven by its own task, not by the HTTP request that started it: events go to the
run's :class:`EventLog` and every connection merely follows the log. When the last follower
leaves, the run keeps going for a grace period so the client can reconnect with
``Last-Event-ID``; after that it is cancelled. Whatever ends a run, its stream ends with
everything closed and exactly one terminal event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from enum import Enum

from agent_server.runtime.loop import Agent, PreparedRun
from protocol import events
from protocol.events import Event
from protocol.input import InputError, RunAgentInput
from protocol.lifecycle import Lifecycle, LifecycleError

from .eventlog import EventLog

logger = logging.getLogger(__name__)


class StopReason(Enum):
    REQUESTED = "requested"  # POST /agui/stop or a WebSocket stop frame
    ABANDONED = "abandoned"  # nobody reconnected within the grace period
    SHUTDOWN = "shutdown"


@dataclass(frozen=True)
class RunLimits:
    disconnect_grace: float = 30.0
    run_timeout: float = 600.0
    log_retention: float = 3600.0  # seconds a finished run's events stay replayable
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
    _grace: asyncio.TimerHandle | None = field(default=None, repr=False)

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
    def __init__(self, agent: Agent, limits: RunLimits = RunLimits()) -> None:
        self.agent = agent
        self.limits = limits
        self._active: dict[str, ActiveRun | None] = {}  # None: reserved while preparing
        self._logs: OrderedDict[str, EventLog] = OrderedDict()

    # Starting and stopping -------------------------------------------------------------------

    async def start(self, input: RunAgentInput, owner: str) -> ActiveRun:
        """Start a run, or raise :class:`InputError` having changed nothing."""
        if input.thread_id in self._active:
            raise InputError(409, "thread_busy", f"thread {input.thread_id!r} already has a run")
        self._active[input.thread_id] = None  # reserve before the first await
        try:
            prepared = await self.agent.prepare(input, owner)
        except BaseException:
            del self._active[input.thread_id]
            raise
        log = self._logs.get(input.run_id)
        if log is None:
            log = self._logs[input.run_id] = EventLog(input.thread_id, input.run_id)
        else:  # a resume that reuses the interrupted run's id continues its log
            log.reopen()
            self._logs.move_to_end(input.run_id)
        run = ActiveRun(
            prepared,
            log,
            start_seq=log.last_seq,
            history=[dict(message) for message in prepared.transcript.messages],
        )
        self._active[input.thread_id] = run
        run.task = asyncio.create_task(self._drive(run), name=f"run {input.run_id}")
        return run

    async def stop(self, thread_id: str, owner: str, run_id: str | None = None) -> str:
        """Cancel the thread's active run at once and wait for its stream to end."""
        run = self._active.get(thread_id)
        if run is None or run.owner != owner or (run_id is not None and run.run_id != run_id):
            raise InputError(404, "no_active_run", f"thread {thread_id!r} has no active run")
        self._cancel(run, StopReason.REQUESTED)
        if run.task is not None:
            await asyncio.wait({run.task}, timeout=10)
        return run.run_id

    async def shutdown(self) -> None:
        runs = [run for run in self._active.values() if run is not None]
        for run in runs:
            self._cancel(run, StopReason.SHUTDOWN)
        tasks = {run.task for run in runs if run.task is not None}
        if tasks:
            await asyncio.wait(tasks, timeout=10)

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

    def log(self, run_id: str) -> EventLog | None:
        return self._logs.get(run_id)

    # Driving a run ---------------------------------------------------------------------------

    async def _drive(self, run: ActiveRun) -> None:
        lifecycle = Lifecycle()
        ending: list[Event] = []
        try:
            async with asyncio.timeout(self.limits.run_timeout):
                async for event in self.agent.run(run.prepared):
                    lifecycle.observe(event)
                    run.log.append(event)
                    run.ended = not lifecycle.run_active
        except asyncio.CancelledError:
            if run.stop_reason is None:
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
            ending = [events.run_error("internal error", "internal")]
        except Exception:
            logger.exception("run %s failed", run.run_id)
            ending = self._failure(lifecycle, "internal", "internal error")
        finally:
            for event in ending:
                run.log.append(event)
            run.log.close()
            if run._grace is not None:
                run._grace.cancel()
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
            oldest_id, oldest = next(iter(self._logs.items()))
            if not oldest.closed:
                break
            del self._logs[oldest_id]

    def _forget(self, log: EventLog, last_seq: int) -> None:
        # A resume may have reopened and extended the log since: then its own timer decides.
        if self._logs.get(log.run_id) is log and log.closed and log.last_seq == last_seq:
            del self._logs[log.run_id]


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
