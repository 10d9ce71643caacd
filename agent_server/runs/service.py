"""The run API: how every face starts, follows, hydrates, stops and observes runs.

Faces (AG-UI over HTTP and WebSocket, the CopilotKit surface, the voice participant) call
these methods with the verified caller's id and read :class:`RunStream`s: batches of
:class:`~agent_server.runs.eventlog.RunEvent` (a sequence number and the event's JSON,
encoded once), which each face frames its own way. Nothing here knows a wire format beyond
AG-UI's events, nor any transport.

Requests that cannot be served raise :class:`~protocol.errors.Refusal` before a stream
exists (``thread_busy``, ``thread_not_found``, ``run_not_found``, ...), having changed
nothing; a run that fails later ends its stream with ``RUN_ERROR``.

Following a run counts as being connected to it: a run nobody follows is cancelled after
``CITADEL_DISCONNECT_GRACE`` seconds (see :mod:`agent_server.runs.manager`), so a face
should iterate the stream it asked for, and close it (``aclose``) when its client leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson

from agent_server.agent_ids import DEFAULT_AGENT
from agent_server.runs.eventlog import Batch, EventLog
from agent_server.runs.manager import ActiveRun, RunManager, following
from agent_server.runtime.loop import approval_outcome
from agent_server.store.base import PendingInterrupt, RunStatus, ThreadStore
from protocol import events
from protocol.errors import Refusal
from protocol.events import TERMINAL_TYPES, Event
from protocol.framing import encode
from protocol.input import RunAgentInput
from protocol.versions import WireVersion, downgrade, wire_version


@dataclass(frozen=True, slots=True)
class Pacing:
    """How live events are handed out: ``idle_timeout`` seconds of silence yield an empty
    batch (a face's keep-alive); events closer than ``min_interval`` share a batch."""

    idle_timeout: float | None = 15.0
    min_interval: float = 0.0
    poll: float = 1.0  # how often an observer looks for runs on other workers


@dataclass
class RunStream:
    """Events from a point on: those in hand (snapshots, stored events), then the live
    ones as they happen. Iterate it (``async for batch in stream``), or, when ``live`` is
    None, read ``ready`` and be done."""

    thread_id: str
    run_id: str | None  # the run followed; None: a hydration, or a thread's runs observed
    version: WireVersion
    ready: list[Batch]
    live: AsyncGenerator[Batch, None] | None  # ``ready`` first, then the live events

    def __aiter__(self) -> AsyncIterator[Batch]:
        return self.live if self.live is not None else _iterate(self.ready)

    async def aclose(self) -> None:
        """Stop following (the run goes on; see the module's docstring)."""
        if self.live is not None:
            await self.live.aclose()


class RunService:
    """One per app; see the module's docstring."""

    def __init__(self, manager: RunManager, store: ThreadStore, pacing: Pacing = Pacing()):
        self.manager = manager
        self.store = store
        self.pacing = pacing

    # Starting and stopping -------------------------------------------------------------------

    async def start(
        self, owner: str, input: RunAgentInput, agent_id: str = DEFAULT_AGENT
    ) -> RunStream:
        """Start a run of ``input`` by agent ``agent_id`` for ``owner`` and follow it from
        its first event."""
        run = await self.manager.start(input, owner, agent_id)
        version = wire_version(input.protocol_version)
        live = self._follow(run.log, run.start_seq, version, run)
        return RunStream(run.thread_id, run.run_id, version, [], live)

    async def stop(self, owner: str, thread_id: str, run_id: str | None = None) -> str:
        """Cancel the thread's active run (on whichever worker) and wait for its end; the
        stopped run's id. ``no_active_run`` when there is none of ``owner``'s."""
        return await self.manager.stop(thread_id, owner, run_id)

    async def amend_answer(self, owner: str, thread_id: str, message_id: str, text: str) -> bool:
        """Make a stored answer say ``text`` instead (what a voice face actually spoke
        before the user cut in). The run's events keep what was generated."""
        return await self.store.amend_answer(thread_id, owner, message_id, text)

    # Joining a thread ------------------------------------------------------------------------

    async def resume(
        self, owner: str, thread_id: str, run_id: str, after_seq: int, version: WireVersion
    ) -> RunStream:
        """Exactly the events of ``run_id`` after ``after_seq``: from memory while the run
        is recent (a mirror if it runs on another worker), from the store after that."""
        stored = await self.store.get_run(thread_id, run_id)
        if stored is None or stored.owner != owner:
            raise Refusal("run_not_found", f"no replayable run {run_id!r} on this thread")
        log = await self.manager.find_log(thread_id, run_id)
        stored_until = log.first_seq - 1 if log is not None else stored.last_seq
        replay: Batch | None = None
        if after_seq < stored_until or log is None:
            found = await self.store.read_events(thread_id, run_id, after_seq)
            if log is not None:
                found = found[: stored_until - after_seq]
            elif stored.status is RunStatus.FAILED and not _ends_run(found):
                # The worker died mid-run: say so, so that the resumed stream still ends.
                found.append(
                    encode(events.run_error("the server stopped during this run", "internal"))
                )
            replay = _shaped(run_id, enumerate(found, after_seq + 1), version)
        ready = [replay] if replay else []
        if log is None:
            return RunStream(thread_id, run_id, version, ready, None)
        active = self.manager.active_run(thread_id)
        run = active if active is not None and active.run_id == run_id else None
        live = self._follow(log, max(after_seq, stored_until), version, run, ready)
        return RunStream(thread_id, run_id, version, ready, live)

    async def hydrate(self, owner: str, thread_id: str, version: WireVersion) -> RunStream:
        """The thread as it is (a complete run of ``MESSAGES_SNAPSHOT`` and
        ``STATE_SNAPSHOT``, its open interrupts as the outcome), then its active run live,
        wherever it runs. ``thread_not_found`` when ``owner`` has no such thread."""
        active = self._active(owner, thread_id)
        record = None
        if active is None:
            record = await self.store.load(thread_id)
            if record is None or record.owner != owner:
                raise Refusal("thread_not_found", f"no thread {thread_id!r}")
        if active is not None:
            messages, state, pending = active.history, active.prepared.state.value, []
            log, after = active.log, active.start_seq
        else:
            assert record is not None
            messages, state, pending = record.messages, record.state, record.pending_interrupts
            log, after = None, 0
            elsewhere = await self.manager.run_elsewhere(thread_id)
            if elsewhere is not None and elsewhere[0].owner == owner:
                pending = []  # the thread is in a run: its interrupts were answered
                log, after = elsewhere[1], elsewhere[0].start_seq
        ready = [snapshot(thread_id, messages, state, pending, version)]
        if log is None:
            return RunStream(thread_id, None, version, ready, None)
        live = self._follow(log, after, version, active, ready)
        return RunStream(thread_id, log.run_id, version, ready, live)

    async def observe(self, owner: str, thread_id: str, version: WireVersion) -> RunStream:
        """The thread as it is, then every run on it, live, whichever face or worker starts
        it, until the stream is closed. A thread that does not exist yet is observed from
        its first run; someone else's is ``thread_not_found``. An observer that falls a
        whole run behind skips to the newest one."""
        record = await self.store.load(thread_id)
        if record is not None and record.owner != owner:
            raise Refusal("thread_not_found", f"no thread {thread_id!r}")
        ready, seen = [], None
        if record is not None:
            ready = [snapshot(thread_id, record.messages, record.state, [], version)]
            latest = self.manager.latest_run(thread_id)
            if latest is not None and latest.log.closed:  # the snapshot holds it already
                seen = latest.log.run_id, latest.log.last_seq
        live = self._observe(owner, thread_id, version, seen, ready)
        return RunStream(thread_id, None, version, ready, live)

    # Following ---------------------------------------------------------------------------------

    def _active(self, owner: str, thread_id: str) -> ActiveRun | None:
        """The thread's active run on this worker if it is ``owner``'s: someone else's
        thread looks like no thread at all."""
        run = self.manager.active_run(thread_id)
        return run if run is not None and run.owner == owner else None

    async def _follow(
        self,
        log: EventLog,
        after_seq: int,
        version: WireVersion,
        run: ActiveRun | None,
        ready: list[Batch] = (),  # type: ignore[assignment]
    ) -> AsyncGenerator[Batch, None]:
        """``ready``, then ``log`` after ``after_seq``, counted as following ``run``."""
        for batch in ready:
            yield batch
        pacing = self.pacing
        follow = log.follow(
            after_seq, version, idle_timeout=pacing.idle_timeout, min_interval=pacing.min_interval
        )
        with following(self.manager, run):
            async with contextlib.aclosing(follow) as batches:
                async for batch in batches:
                    yield batch

    async def _observe(
        self,
        owner: str,
        thread_id: str,
        version: WireVersion,
        seen: tuple[str, int] | None,
        ready: list[Batch],
    ) -> AsyncGenerator[Batch, None]:
        for batch in ready:
            yield batch
        while True:
            found = await self._next_run(owner, thread_id, seen)
            if found is None:
                yield Batch(thread_id, (), [])  # quiet: a keep-alive
                continue
            log, after = found
            run = self._active(owner, thread_id)
            followed = run if run is not None and run.log is log else None
            async with contextlib.aclosing(self._follow(log, after, version, followed)) as batches:
                async for batch in batches:
                    yield batch
            seen = log.run_id, log.last_seq

    async def _next_run(
        self, owner: str, thread_id: str, seen: tuple[str, int] | None
    ) -> tuple[EventLog, int] | None:
        """A run of the thread with events not seen yet (its log and where to follow it
        from), waiting up to the idle timeout: runs started here wake the wait, runs on
        other workers are looked for every ``poll`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.pacing.idle_timeout or 3600.0)
        while True:
            started = self.manager.run_started(thread_id)  # armed before looking: no race
            try:
                found = await self._unseen_run(owner, thread_id, seen)
                if found is not None:
                    return found
                left = deadline - loop.time()
                if left <= 0:
                    return None
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(left, self.pacing.poll)):
                        await started
            finally:
                started.cancel()

    async def _unseen_run(
        self, owner: str, thread_id: str, seen: tuple[str, int] | None
    ) -> tuple[EventLog, int] | None:
        latest = self.manager.latest_run(thread_id)
        if latest is not None and latest.owner == owner:
            after = _after(latest.log, latest.start_seq, seen)
            if after is not None:
                return latest.log, after
        if latest is None or latest.log.closed:
            elsewhere = await self.manager.run_elsewhere(thread_id)
            if elsewhere is not None and elsewhere[0].owner == owner:
                after = _after(elsewhere[1], elsewhere[0].start_seq, seen)
                if after is not None:
                    return elsewhere[1], after
        return None


def _after(log: EventLog, start_seq: int, seen: tuple[str, int] | None) -> int | None:
    """Where to follow ``log`` from so nothing is shown twice; None: nothing new."""
    if seen is None or seen[0] != log.run_id:
        return start_seq
    if log.closed and log.last_seq <= seen[1]:
        return None
    return max(start_seq, seen[1])


def snapshot(
    thread_id: str,
    messages: list[dict[str, Any]],
    state: Any,
    pending: list[PendingInterrupt],
    version: WireVersion,
) -> Batch:
    """A complete run that carries the thread as it is: history, state, open interrupts.
    Its events have no sequence numbers: it is not a run of the thread, nothing to resume."""
    run_id = f"{thread_id}:hydrate"
    outcome = approval_outcome(pending) if pending else None
    carried: list[Event] = [
        events.run_started(thread_id, run_id),
        events.messages_snapshot(messages),
        events.state_snapshot(state if state is not None else {}),
        events.run_finished(thread_id, run_id, outcome=outcome),
    ]
    return _shaped(run_id, ((None, encode(event)) for event in carried), version)


def _shaped(run_id: str, found: Any, version: WireVersion) -> Batch:
    """``(seq, JSON)`` pairs as a client of ``version`` takes them (dropped or reshaped)."""
    seqs: list[int | None] = []
    shaped: list[bytes] = []
    for seq, data in found:
        if version is WireVersion.LEGACY:
            event = orjson.loads(data)
            legacy = downgrade(event)
            if legacy is None:
                continue
            if legacy is not event:
                data = encode(legacy)
        seqs.append(seq)
        shaped.append(data)
    return Batch(run_id, seqs, shaped)


async def _iterate(batches: list[Batch]) -> AsyncIterator[Batch]:
    for batch in batches:
        yield batch


def _ends_run(stored: list[bytes]) -> bool:
    return bool(stored) and orjson.loads(stored[-1])["type"] in TERMINAL_TYPES
