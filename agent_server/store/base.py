"""What a thread store keeps, and the one interface every store implements.

The server's copy of a thread is the truth the runtime reads; a client's message list only
adds new messages to it. A run is written twice: when it starts (the thread, the run and the
client's new messages, before the first byte is sent) and when it ends (what the run produced,
the state, pending interrupts and the run's outcome, before its terminal event is sent). Events
in between are written in batches, off the hot path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

Message = dict[str, Any]


@dataclass(frozen=True, slots=True)
class PendingInterrupt:
    """A tool call waiting for a person's approval; the next run must answer it."""

    id: str
    tool_call_id: str
    tool_name: str
    arguments: str
    run_id: str


@dataclass
class ThreadRecord:
    thread_id: str
    owner: str
    title: str = ""
    messages: list[Message] = field(default_factory=list)
    state: Any = None
    pending_interrupts: list[PendingInterrupt] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ThreadSummary:
    thread_id: str
    title: str
    message_count: int
    created_at: datetime
    updated_at: datetime


class RunStatus(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    INTERRUPTED = "interrupted"  # waiting for a person to answer its interrupts
    CANCELLED = "cancelled"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class RunStart:
    thread_id: str
    run_id: str
    owner: str
    title: str  # used only when the thread is new
    new_messages: list[Message]  # what the client added, appended after the stored history
    protocol_version: str | None = None


@dataclass(frozen=True, slots=True)
class EventBatch:
    """Consecutive events of one run: ``events[i]`` has sequence number ``seq_from + i``."""

    thread_id: str
    run_id: str
    seq_from: int
    events: list[bytes]
    owner: str = ""  # whose run (the admin feed says so; the store knows it already)


@dataclass(frozen=True, slots=True)
class RunEnd:
    thread_id: str
    run_id: str
    status: RunStatus
    outcome: str | None  # success | interrupt | cancelled
    error_code: str | None
    error_message: str | None
    new_messages: list[Message]  # what the run produced
    state: Any
    pending_interrupts: list[PendingInterrupt]
    usage: list[dict[str, Any]]
    last_seq: int
    events: EventBatch | None  # the run's events not yet written, its terminal event included


@dataclass(frozen=True, slots=True)
class RunRecord:
    """A run as stored: whose, how it ended, what it cost and when (for replay and for
    administrators). A resumed run keeps its first ``started_at``."""

    thread_id: str
    run_id: str
    owner: str
    status: RunStatus
    last_seq: int
    started_at: datetime
    outcome: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    usage: list[dict[str, Any]] | None = None
    protocol_version: str | None = None
    worker_id: str | None = None  # the process that ran it last
    first_event_at: datetime | None = None
    finished_at: datetime | None = None

    @property
    def duration_ms(self) -> int | None:
        """From start to finish; None while the run goes on."""
        if self.finished_at is None:
            return None
        return (self.finished_at - self.started_at) // timedelta(milliseconds=1)


RunCursor = tuple[datetime, str, str]
"""Where a page of runs ended: (started_at, thread_id, run_id) of its last run."""


@dataclass(frozen=True, slots=True)
class RunQuery:
    """Which runs to list; an empty field matches every run."""

    statuses: frozenset[RunStatus] = frozenset()
    owner: str | None = None
    thread_id: str | None = None
    error_code: str | None = None
    since: datetime | None = None  # started at or after
    until: datetime | None = None  # started before

    def matches(self, run: RunRecord) -> bool:
        """Whether ``run`` is one to list (the in-memory store's filter)."""
        return (
            (not self.statuses or run.status in self.statuses)
            and self.owner in (None, run.owner)
            and self.thread_id in (None, run.thread_id)
            and self.error_code in (None, run.error_code)
            and (self.since is None or run.started_at >= self.since)
            and (self.until is None or run.started_at < self.until)
        )


def run_key(run: RunRecord) -> RunCursor:
    """The order runs are listed in (descending) and the cursor after ``run``."""
    return run.started_at, run.thread_id, run.run_id


def token_totals(usage: list[dict[str, Any]]) -> tuple[int | None, int | None]:
    """Input and output tokens over a run's model calls; None when none were counted."""
    input_tokens = sum(entry.get("inputTokens", 0) for entry in usage) or None
    output_tokens = sum(entry.get("outputTokens", 0) for entry in usage) or None
    return input_tokens, output_tokens


@dataclass(frozen=True, slots=True)
class Actor:
    """Who did something, for the audit log."""

    user_id: str
    remote_addr: str | None = None


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int  # increases with time: the cursor of the audit log's pages
    at: datetime
    actor: str
    action: str
    thread_id: str | None
    details: dict[str, Any]
    remote_addr: str | None


class StorageUnavailable(RuntimeError):
    """The store cannot be reached; the message says which and why, never with secrets."""


class ThreadStore(Protocol):
    async def load(self, thread_id: str) -> ThreadRecord | None: ...

    async def start_run(self, start: RunStart) -> None: ...

    async def append_events(self, batches: list[EventBatch]) -> None: ...

    async def finish_run(self, end: RunEnd) -> None: ...

    async def get_run(self, thread_id: str, run_id: str) -> RunRecord | None: ...

    async def find_runs(self, run_id: str, limit: int) -> list[RunRecord]:
        """Runs with this id on any thread (ids are unique per thread only), by thread id."""
        ...

    async def list_runs(
        self, query: RunQuery, limit: int, before: RunCursor | None = None
    ) -> list[RunRecord]:
        """Runs of every owner matching ``query``, newest first (by :func:`run_key`), those
        after ``before`` when given."""
        ...

    async def read_events(self, thread_id: str, run_id: str, after_seq: int) -> list[bytes]:
        """The JSON of each stored event after ``after_seq``, in order."""
        ...

    async def event_page(
        self, thread_id: str, run_id: str, after_seq: int, limit: int
    ) -> list[tuple[int, bytes]]:
        """At most ``limit`` stored events after ``after_seq`` with their sequence numbers,
        in order (numbered, since expired events leave a gap at the start)."""
        ...

    async def list_threads(
        self, owner: str, limit: int, before: tuple[datetime, str] | None
    ) -> list[ThreadSummary]: ...

    async def rename_thread(self, thread_id: str, owner: str, title: str, actor: Actor) -> bool: ...

    async def amend_answer(self, thread_id: str, owner: str, message_id: str, text: str) -> bool:
        """Replace the text of one of the thread's assistant messages (a spoken answer cut
        short keeps what was said); False if ``owner`` has no such message."""
        ...

    async def delete_thread(self, thread_id: str, owner: str, actor: Actor) -> bool: ...

    async def audit(self, actor: Actor, action: str, details: dict[str, Any]) -> None:
        """One audit-log row for an event that changes no record (a login, a denial)."""
        ...

    async def list_audit(
        self, limit: int, before_id: int | None = None, actor: str | None = None
    ) -> list[AuditEntry]:
        """The newest entries first, older than ``before_id``, of ``actor`` if given."""
        ...

    async def recover(self) -> int:
        """Mark runs whose worker died as failed; how many."""
        ...

    async def check(self) -> None:
        """Raise :class:`StorageUnavailable` unless the store answers now (readiness)."""
        ...
