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

Across workers, a run's events also go to the :class:`EventBus` (the admin feed, and the run
stream other workers read), and its thread is claimed in :class:`RunClaims` while it runs. A
client that reconnects to another worker follows a *mirror* there: a local log filled from
the run's stream, gaps filled from the store, ended by the terminal event, or by the store
when the run ended (or its worker died) while the stream was silent. A stop request for a
run on another worker goes through the claims; a client following a mirror keeps the run
from being abandoned. With Redis down, runs go on locally: their events reach the bus when it
is back, and the one-run-per-thread rule holds per worker meanwhile.

A configuration reload may give the manager other :attr:`RunManager.agents` (another model,
other tools): runs started before keep the agent they started with to their end, and
:meth:`RunManager.drained` tells when the replaced model has no run left.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from agent_server.agent_ids import DEFAULT_AGENT
from agent_server.models.base import ChatModel
from agent_server.observability.logs import bind_run
from agent_server.observability.metrics import RunTiming
from agent_server.runtime.loop import Agent, PreparedRun
from agent_server.store.base import (
    EventBatch,
    RunEnd,
    RunStatus,
    StorageUnavailable,
    ThreadStore,
    token_totals,
)
from protocol import events
from protocol.errors import Refusal
from protocol.events import Event, EventType
from protocol.framing import encode
from protocol.input import RunAgentInput
from protocol.lifecycle import Lifecycle, LifecycleError

from .bus import BusUnavailable, EventBus, LocalBus, RunEvents
from .claims import Claim, ClaimsUnavailable, LocalClaims, RunClaims
from .eventlog import EventLog
from .pump import LogPump, RunKey

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
    publish_interval: float = 0.005  # how long the bus pump gathers events before it sends
    mirror_poll: float = 1.0  # how long a mirror waits on its stream before it looks around


@dataclass(frozen=True, slots=True)
class LatestRun:
    owner: str
    log: EventLog
    start_seq: int  # the log's last seq before the run (non-zero when a resume reuses a runId)


@dataclass(eq=False)
class ActiveRun:
    prepared: PreparedRun
    agent: Agent  # the one that prepared it, kept to its end when a reload brings another
    log: EventLog
    start_seq: int  # the log's last seq before this run (non-zero when a resume reuses a runId)
    history: list[dict]  # the thread's messages when the run started, for hydration
    task: asyncio.Task[None] | None = None
    followers: int = 0
    stop_reason: StopReason | None = None
    driving: bool = False  # its task has begun (cancelling it now runs its handlers)
    ended: bool = False  # the terminal event is in the log; nothing left to cancel
    store_retry: asyncio.Task[None] | None = None  # its end waits for the store to come back
    claim: Claim | None = None  # None: claimed locally only (the claims were unavailable)
    started_at: float = field(default_factory=time.monotonic)
    first_event_at: float | None = None
    first_token_at: float | None = None
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
        agents: Mapping[str, Agent],
        store: ThreadStore,
        writer: LogPump,
        limits: RunLimits = RunLimits(),
        *,
        bus: EventBus | None = None,
        claims: RunClaims | None = None,
    ) -> None:
        self.agents = agents  # by id; "default" always among them
        self.store = store
        self.writer = writer
        self.limits = limits
        self.bus: EventBus = bus or LocalBus()
        self.claims: RunClaims = claims or LocalClaims()
        self.claims.on_stop = self._stop_requested
        self.publisher = LogPump(
            "bus", self.bus.publish, BusUnavailable, interval=limits.publish_interval
        )
        self._active: dict[str, ActiveRun | None] = {}  # None: reserved while preparing
        self.ended: list[Callable[[RunEnd], None]] = []  # told of each run's end, as sent
        self.timed: list[Callable[[RunTiming], None]] = []  # told of each run's timing at its end
        self._logs: OrderedDict[RunKey, EventLog] = OrderedDict()
        self._starting: dict[str, list[asyncio.Future[None]]] = {}  # thread -> run_started()
        self._latest: dict[str, LatestRun] = {}  # thread -> its newest run started here
        self._unsaved: set[asyncio.Task[None]] = set()
        self._background: set[asyncio.Task[Any]] = set()
        # Each run from its start until its driving ends, with the agent it runs with.
        self._running: dict[asyncio.Future[None], Agent] = {}

    @property
    def agent(self) -> Agent:
        """The default agent."""
        return self.agents[DEFAULT_AGENT]

    def find_agent(self, agent_id: str) -> Agent:
        """Agent ``agent_id``, or ``agent_not_found``."""
        agent = self.agents.get(agent_id)
        if agent is None:
            raise Refusal("agent_not_found", f"no agent {agent_id!r}")
        return agent

    @property
    def worker(self) -> str:
        return self.bus.worker

    async def open(self) -> None:
        """Start the bus pump and the claims' upkeep (renewals, stop requests)."""
        self.publisher.start()
        await self.claims.start()

    # Starting and stopping -------------------------------------------------------------------

    async def start(
        self, input: RunAgentInput, owner: str, agent_id: str = DEFAULT_AGENT
    ) -> ActiveRun:
        """Start a run of agent ``agent_id``, or raise :class:`Refusal` /
        :class:`StorageUnavailable` having changed nothing."""
        agent = self.find_agent(agent_id)  # the run's, to its end, whatever a reload does
        if input.thread_id in self._active:
            raise _busy(input.thread_id)
        self._active[input.thread_id] = None  # reserve before the first await
        driven = asyncio.get_running_loop().create_future()
        self._running[driven] = agent
        driven.add_done_callback(self._running.pop)
        claim = None
        try:
            prepared = await agent.prepare(input, owner)
            mine = Claim(input.run_id, owner, self.worker, prepared.previous_seq)
            claim = await self._claim(input.thread_id, mine)
            await self.store.start_run(agent.run_start(prepared))
        except BaseException:
            driven.set_result(None)
            del self._active[input.thread_id]
            if claim is not None:
                self._in_background(self.claims.release(input.thread_id, claim))
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
            agent,
            log,
            start_seq=log.last_seq,
            history=[dict(message) for message in prepared.transcript.messages],
            claim=claim,
        )
        self._active[input.thread_id] = run
        self._latest[input.thread_id] = LatestRun(owner, log, run.start_seq)
        for waiter in self._starting.get(input.thread_id, ()):
            if not waiter.done():
                waiter.set_result(None)
        self.writer.track(log)
        self.publisher.track(log, owner)
        run.task = asyncio.create_task(self._drive(run), name=f"run {input.run_id}")
        run.task.add_done_callback(lambda _: driven.set_result(None))
        return run

    async def drained(self, model: ChatModel) -> None:
        """Return once every run started with ``model`` has been driven to its end (runs
        keep the agent they started with: a replaced model is closed after this)."""
        started = {driven for driven, agent in self._running.items() if agent.model is model}
        if started:
            await asyncio.wait(started)

    async def _claim(self, thread_id: str, claim: Claim) -> Claim | None:
        """``claim`` once the thread is ours; None if the claims are unavailable (the run
        goes on, claimed by this worker alone)."""
        try:
            holder = await self.claims.claim(thread_id, claim)
        except ClaimsUnavailable as error:
            logger.warning("thread %s claimed on this worker only: %s", thread_id, error)
            return None
        if holder is not None:
            raise _busy(thread_id)
        return claim

    async def stop(self, thread_id: str, owner: str, run_id: str | None = None) -> str:
        """Cancel the thread's active run at once and wait for its stream to end, wherever it
        runs."""
        missing = Refusal("no_active_run", f"thread {thread_id!r} has no active run")
        run = self._active.get(thread_id)
        if run is None:
            return await self._stop_elsewhere(thread_id, owner, run_id, missing)
        if run.owner != owner or (run_id is not None and run.run_id != run_id):
            raise missing
        self._cancel(run, StopReason.REQUESTED)
        if run.task is not None:
            await asyncio.wait({run.task}, timeout=self.limits.write_timeout + 5)
        return run.run_id

    async def _stop_elsewhere(
        self, thread_id: str, owner: str, run_id: str | None, missing: Refusal
    ) -> str:
        """Ask the worker that runs it, again each second, until its mirror here has ended."""
        try:
            holder = await self.claims.holder(thread_id)
        except ClaimsUnavailable as error:
            raise Refusal("unavailable", f"runs of other workers: {error}") from None
        if (
            holder is None
            or holder.worker == self.worker
            or holder.owner != owner
            or (run_id is not None and holder.run_id != run_id)
        ):
            raise missing
        log = self._mirror(thread_id, holder)
        try:
            async with asyncio.timeout(self.limits.write_timeout + 5):
                async for _ in log.follow(log.last_seq, idle_timeout=1.0):
                    with contextlib.suppress(ClaimsUnavailable):
                        await self.claims.request_stop(thread_id, holder.run_id)
        except TimeoutError:
            raise Refusal("timeout", "the run did not stop in time") from None
        return holder.run_id

    def _stop_requested(self, thread_id: str, run_id: str) -> None:
        run = self._active.get(thread_id)
        if run is not None and run.run_id == run_id:
            self._cancel(run, StopReason.REQUESTED)

    async def shutdown(self) -> None:
        runs = [run for run in self._active.values() if run is not None]
        for run in runs:
            self._cancel(run, StopReason.SHUTDOWN)
        tasks = {run.task for run in runs if run.task is not None} | self._unsaved
        if tasks:
            await asyncio.wait(tasks, timeout=self.limits.write_timeout + 5)
        for task in self._unsaved:
            task.cancel()
        if self._background:  # claims being released, mirrors
            await asyncio.wait(self._background, timeout=1.0)
        for task in self._background:
            task.cancel()
        await self.publisher.close()
        await self.claims.aclose()

    def _cancel(self, run: ActiveRun, reason: StopReason) -> None:
        if run.stop_reason is None and not run.ended and run.task is not None:
            run.stop_reason = reason
            if run.driving:  # a task cancelled before its first step runs none of its code:
                run.task.cancel()  # one not started yet sees stop_reason when it starts

    # Followers and the grace period ----------------------------------------------------------

    def attach(self, run: ActiveRun) -> None:
        run.followers += 1
        if run._grace is not None:
            run._grace.cancel()
            run._grace = None

    def detach(self, run: ActiveRun) -> None:
        run.followers -= 1
        if run.followers == 0 and not run.ended:
            self._start_grace(run)

    def _start_grace(self, run: ActiveRun) -> None:
        run._grace = asyncio.get_running_loop().call_later(
            self.limits.disconnect_grace, self._grace_over, run
        )

    def _grace_over(self, run: ActiveRun) -> None:
        run._grace = None
        if not run.followers and not run.ended:
            self._in_background(self._abandon(run))

    async def _abandon(self, run: ActiveRun) -> None:
        """Cancel a run nobody followed for the grace period, unless a client follows it
        from another worker."""
        try:
            watched = await self.claims.watched(run.thread_id, run.run_id)
        except ClaimsUnavailable:
            watched = False
        if watched:
            self._start_grace(run)
        else:
            self._cancel(run, StopReason.ABANDONED)

    # Lookups -------------------------------------------------------------------------------

    def latest_run(self, thread_id: str) -> LatestRun | None:
        """The thread's newest run started on this worker, while its log is kept."""
        return self._latest.get(thread_id)

    def run_started(self, thread_id: str) -> asyncio.Future[None]:
        """Done when a run of the thread next starts on this worker (cancel it to stop
        waiting)."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._starting.setdefault(thread_id, []).append(waiter)
        waiter.add_done_callback(lambda done: self._stop_waiting(thread_id, done))
        return waiter

    def _stop_waiting(self, thread_id: str, waiter: asyncio.Future[None]) -> None:
        waiters = self._starting.get(thread_id)
        if waiters is not None and waiter in waiters:
            waiters.remove(waiter)
            if not waiters:
                del self._starting[thread_id]

    def active_run(self, thread_id: str) -> ActiveRun | None:
        return self._active.get(thread_id)

    def log(self, thread_id: str, run_id: str) -> EventLog | None:
        return self._logs.get((thread_id, run_id))

    async def run_elsewhere(self, thread_id: str) -> tuple[Claim, EventLog] | None:
        """The thread's active run on another worker, and its mirror here."""
        try:
            holder = await self.claims.holder(thread_id)
        except ClaimsUnavailable:
            return None
        if holder is None or holder.worker == self.worker:
            return None
        return holder, self._mirror(thread_id, holder)

    async def find_log(self, thread_id: str, run_id: str) -> EventLog | None:
        """The run's log here, or a mirror if it runs on another worker."""
        log = self.log(thread_id, run_id)
        if log is not None:
            return log
        elsewhere = await self.run_elsewhere(thread_id)
        if elsewhere is None or elsewhere[0].run_id != run_id:
            return None
        return elsewhere[1]

    # Mirrors of runs on other workers --------------------------------------------------------

    def _mirror(self, thread_id: str, holder: Claim) -> EventLog:
        key = (thread_id, holder.run_id)
        log = self._logs.get(key)
        if log is None:
            log = self._logs[key] = EventLog(*key, first_seq=holder.start_seq + 1)
            self._in_background(self._fill_mirror(log), name=f"mirror {holder.run_id}")
        return log

    async def _fill_mirror(self, log: EventLog) -> None:
        """Until the run ends, or nobody has followed the mirror for the grace period (then
        it is dropped unfinished, and made again when someone asks)."""
        thread_id, run_id = log.thread_id, log.run_id
        watched_at, followed_at = 0.0, time.monotonic()
        delay = 0.1
        try:
            while not log.closed:
                now = time.monotonic()
                if log.followers:
                    followed_at = now
                    if now - watched_at > self.limits.mirror_poll:
                        with contextlib.suppress(ClaimsUnavailable):
                            await self.claims.watch(thread_id, run_id)
                            watched_at = now
                elif now - followed_at > self.limits.disconnect_grace:
                    del self._logs[(thread_id, run_id)]
                    return
                try:
                    found = await self.bus.read_run(
                        thread_id, run_id, log.last_seq, self.limits.mirror_poll
                    )
                    delay = 0.1
                except BusUnavailable as error:
                    logger.warning("mirror of run %s: %s", run_id, error)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
                    continue
                if found:
                    await self._mirror_append(log, found)
                elif not await self._claimed(thread_id, run_id):
                    await self._end_mirror_from_store(log)
        finally:
            log.close()
            self._retire(log)

    async def _mirror_append(self, log: EventLog, found: list[RunEvents]) -> None:
        """Append what follows the mirror's last event; a gap (the stream lost events to a
        Redis restart or its expiry) is filled from the store first."""
        for batch in found:
            if batch.seq_from > log.last_seq + 1:
                stored = await self._stored_events(log)
                if not self._append_in_order(log, log.last_seq + 1, stored):
                    return
                if batch.seq_from > log.last_seq + 1:
                    await asyncio.sleep(0.1)  # the store has not caught up yet
                    return
            if self._append_in_order(log, batch.seq_from, batch.events):
                return

    @staticmethod
    def _append_in_order(log: EventLog, seq_from: int, found: list[bytes]) -> bool:
        """Append the events of ``found`` the log has not seen; True once the log closed."""
        for data in found[max(log.last_seq + 1 - seq_from, 0) :]:
            if log.append_encoded(data):
                log.close()
                return True
        return False

    async def _claimed(self, thread_id: str, run_id: str) -> bool:
        try:
            holder = await self.claims.holder(thread_id)
        except ClaimsUnavailable:
            return True  # cannot tell: keep waiting
        return holder is not None and holder.run_id == run_id

    async def _stored_events(self, log: EventLog) -> list[bytes]:
        try:
            return await self.store.read_events(log.thread_id, log.run_id, log.last_seq)
        except StorageUnavailable:
            return []

    async def _end_mirror_from_store(self, log: EventLog) -> None:
        """The run is not claimed: it ended (its end is stored before the claim goes), or its
        worker died (the store marks such runs failed)."""
        try:
            record = await self.store.get_run(log.thread_id, log.run_id)
        except StorageUnavailable:
            return
        if record is None or record.status is RunStatus.RUNNING:
            return  # a claim lost to a Redis restart comes back at the next renewal
        if self._append_in_order(log, log.last_seq + 1, await self._stored_events(log)):
            return
        if record.status is RunStatus.FAILED:
            log.append(events.run_error("the server stopped during this run", "internal"))

    # Driving a run ---------------------------------------------------------------------------

    async def _drive(self, run: ActiveRun) -> None:
        bind_run(run.thread_id, run.run_id)  # every log line of this task names the run
        run.driving = True
        lifecycle = Lifecycle()
        ending: list[Event] = []
        try:
            if run.stop_reason is not None:
                raise asyncio.CancelledError  # stopped before it began
            async with asyncio.timeout(self.limits.run_timeout):
                async for event in run.agent.run(run.prepared):
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
            finished = events.run_finished(
                run.thread_id, run.run_id, outcome=events.cancelled_outcome()
            )
            if lifecycle.run_active:
                ending = [*lifecycle.closing_events(), finished]
            elif not run.ended:  # stopped before its first event
                ending = [events.run_started(run.thread_id, run.run_id), finished]
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
        if run.first_token_at is None:
            if run.first_event_at is None:
                run.first_event_at = time.monotonic()
            if event["type"] == EventType.TEXT_MESSAGE_CONTENT:
                run.first_token_at = time.monotonic()
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
        if self.timed:
            timing = _timing(run, end)
            for timed in self.timed:
                timed(timing)
        run.log.append(terminal)  # its JSON is in ``end``; the writer must not store it twice

    def _run_end(self, run: ActiveRun, terminal: Event, queued: EventBatch | None = None) -> RunEnd:
        seq = run.log.last_seq + 1
        if queued is None:
            queued = self.writer.take(run.key) or EventBatch(*run.key, seq, [])
        else:  # retrying: the same queued events, a different terminal event
            queued = EventBatch(*run.key, queued.seq_from, queued.events[:-1])
        batch = EventBatch(*run.key, queued.seq_from, [*queued.events, encode(terminal)])
        return run.agent.run_end(run.prepared, terminal, batch)

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
            if run.claim is not None:
                self._in_background(self.claims.release(run.thread_id, run.claim))
        self._retire(run.log)

    def _in_background(self, work: Coroutine[Any, Any, None], name: str | None = None) -> None:
        task = asyncio.create_task(_logged(work), name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

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
            oldest = next(iter(self._logs.values()))
            if not oldest.closed:
                break
            self._drop(oldest)

    def _forget(self, log: EventLog, last_seq: int) -> None:
        # A resume may have reopened and extended the log since: then its own timer decides.
        key = (log.thread_id, log.run_id)
        if self._logs.get(key) is log and log.closed and log.last_seq == last_seq:
            self._drop(log)

    def _drop(self, log: EventLog) -> None:
        del self._logs[(log.thread_id, log.run_id)]
        latest = self._latest.get(log.thread_id)
        if latest is not None and latest.log is log:
            del self._latest[log.thread_id]


def _timing(run: ActiveRun, end: RunEnd) -> RunTiming:
    def since_start(moment: float | None) -> float | None:
        return None if moment is None else moment - run.started_at

    rate = None
    output_tokens = token_totals(end.usage)[1]
    if run.first_token_at is not None and output_tokens:
        rate = output_tokens / max(time.monotonic() - run.first_token_at, 1e-3)
    return RunTiming(since_start(run.first_event_at), since_start(run.first_token_at), rate)


def _busy(thread_id: str) -> Refusal:
    return Refusal("thread_busy", f"thread {thread_id!r} already has a run")


async def _logged(work: Coroutine[Any, Any, None]) -> None:
    try:
        await work
    except (ClaimsUnavailable, BusUnavailable) as error:
        logger.warning("%s", error)  # a lease lapses by itself; a mirror is made again
    except Exception:
        logger.exception("background work of the run manager failed")


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
