"""Thread history behind one interface: what a conversation is, wherever it is kept.

The server's copy of a thread is the truth the runtime reads; a client's message list only
adds new messages to it. The in-memory store serves a single process and tests; the Postgres
store keeps threads across restarts and workers.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
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
    messages: list[Message] = field(default_factory=list)
    state: Any = None
    pending_interrupts: list[PendingInterrupt] = field(default_factory=list)
    run_ids: list[str] = field(default_factory=list)


class ThreadStore(Protocol):
    async def load(self, thread_id: str) -> ThreadRecord | None: ...

    async def save(self, record: ThreadRecord) -> None: ...


class MemoryThreadStore:
    """Threads in this process's memory: gone on restart, invisible to other workers."""

    def __init__(self) -> None:
        self._threads: dict[str, ThreadRecord] = {}

    async def load(self, thread_id: str) -> ThreadRecord | None:
        record = self._threads.get(thread_id)
        # Callers get their own copy, so a failed run cannot leave half-applied edits behind.
        return copy.deepcopy(record) if record is not None else None

    async def save(self, record: ThreadRecord) -> None:
        self._threads[record.thread_id] = copy.deepcopy(record)
