"""Threads in this process's memory: gone on restart, invisible to other workers.

The baseline the Postgres store is measured against (bench/), and a store for embedding the
runtime where nothing needs to survive the process.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from agent_server.store.base import (
    Actor,
    AuditEntry,
    EventBatch,
    RunCursor,
    RunEnd,
    RunQuery,
    RunRecord,
    RunStart,
    RunStatus,
    ThreadRecord,
    ThreadSummary,
    run_key,
    token_totals,
)
from agent_server.store.documents import DocumentRecord, IngestJob, JobStatus


@dataclass
class _Thread:
    record: ThreadRecord
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    updated_at: datetime = field(default_factory=lambda: datetime.now(UTC))


class MemoryThreadStore:
    def __init__(self) -> None:
        self._threads: dict[str, _Thread] = {}
        self._runs: dict[tuple[str, str], RunRecord] = {}
        self._events: dict[tuple[str, str], dict[int, bytes]] = {}
        self.audit_log: list[AuditEntry] = []  # what this store records: logins, denials
        self.worker_id = str(uuid.uuid4())  # this process, as the Postgres store names it

    async def load(self, thread_id: str) -> ThreadRecord | None:
        thread = self._threads.get(thread_id)
        # Callers get their own copy, as from a database.
        return copy.deepcopy(thread.record) if thread is not None else None

    async def start_run(self, start: RunStart) -> None:
        thread = self._threads.get(start.thread_id)
        if thread is None:
            thread = self._threads[start.thread_id] = _Thread(
                ThreadRecord(start.thread_id, start.owner, start.title)
            )
        thread.record.messages += copy.deepcopy(start.new_messages)
        thread.updated_at = datetime.now(UTC)
        key = (start.thread_id, start.run_id)
        previous = self._runs.get(key)
        if previous is None:
            self._runs[key] = RunRecord(
                start.thread_id,
                start.run_id,
                start.owner,
                RunStatus.RUNNING,
                0,
                datetime.now(UTC),
                protocol_version=start.protocol_version,
                worker_id=self.worker_id,
            )
        else:  # a resumed run: as in Postgres, it keeps its start, counts and owner
            self._runs[key] = dataclasses.replace(
                previous,
                status=RunStatus.RUNNING,
                outcome=None,
                error_code=None,
                error_message=None,
                worker_id=self.worker_id,
                finished_at=None,
            )

    async def append_events(self, batches: list[EventBatch]) -> None:
        for batch in batches:
            if (batch.thread_id, batch.run_id) not in self._runs:
                continue  # deleted with its thread meanwhile
            stored = self._events.setdefault((batch.thread_id, batch.run_id), {})
            stored.update(zip(itertools.count(batch.seq_from), batch.events))

    async def finish_run(self, end: RunEnd) -> None:
        run = self._runs.get((end.thread_id, end.run_id))
        if run is None or run.status is not RunStatus.RUNNING:
            return  # finished already, or deleted with its thread: as in Postgres
        if end.events is not None:
            await self.append_events([end.events])
        thread = self._threads[end.thread_id]
        thread.record.messages += copy.deepcopy(end.new_messages)
        thread.record.state = copy.deepcopy(end.state)
        thread.record.pending_interrupts = list(end.pending_interrupts)
        thread.updated_at = datetime.now(UTC)
        input_tokens, output_tokens = token_totals(end.usage)
        self._runs[(end.thread_id, end.run_id)] = dataclasses.replace(
            run,
            status=end.status,
            outcome=end.outcome,
            error_code=end.error_code,
            error_message=end.error_message,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            usage=copy.deepcopy(end.usage) or None,
            last_seq=end.last_seq,
            finished_at=datetime.now(UTC),
        )

    async def get_run(self, thread_id: str, run_id: str) -> RunRecord | None:
        return self._runs.get((thread_id, run_id))

    async def find_runs(self, run_id: str, limit: int) -> list[RunRecord]:
        found = [run for (_, key), run in self._runs.items() if key == run_id]
        return sorted(found, key=lambda run: run.thread_id)[:limit]

    async def list_runs(
        self, query: RunQuery, limit: int, before: RunCursor | None = None
    ) -> list[RunRecord]:
        found = [
            run
            for run in self._runs.values()
            if query.matches(run) and (before is None or run_key(run) < before)
        ]
        return sorted(found, key=run_key, reverse=True)[:limit]

    async def read_events(self, thread_id: str, run_id: str, after_seq: int) -> list[bytes]:
        return [event for _, event in self._events_after(thread_id, run_id, after_seq)]

    async def event_page(
        self, thread_id: str, run_id: str, after_seq: int, limit: int
    ) -> list[tuple[int, bytes]]:
        return self._events_after(thread_id, run_id, after_seq)[:limit]

    def _events_after(self, thread_id: str, run_id: str, after_seq: int) -> list[tuple[int, bytes]]:
        stored = self._events.get((thread_id, run_id), {})
        return [(seq, stored[seq]) for seq in sorted(stored) if seq > after_seq]

    async def list_threads(
        self, owner: str, limit: int, before: tuple[datetime, str] | None
    ) -> list[ThreadSummary]:
        mine = [
            ThreadSummary(
                thread.record.thread_id,
                thread.record.title,
                len(thread.record.messages),
                thread.created_at,
                thread.updated_at,
            )
            for thread in self._threads.values()
            if thread.record.owner == owner
        ]
        mine.sort(key=lambda summary: (summary.updated_at, summary.thread_id), reverse=True)
        if before is not None:
            mine = [s for s in mine if (s.updated_at, s.thread_id) < before]
        return mine[:limit]

    async def rename_thread(self, thread_id: str, owner: str, title: str, actor: Actor) -> bool:
        thread = self._threads.get(thread_id)
        if thread is None or thread.record.owner != owner:
            return False
        thread.record.title = title
        return True

    async def amend_answer(self, thread_id: str, owner: str, message_id: str, text: str) -> bool:
        thread = self._threads.get(thread_id)
        if thread is None or thread.record.owner != owner:
            return False
        for message in thread.record.messages:
            if message["id"] == message_id and message["role"] == "assistant":
                message["content"] = text
                return True
        return False

    async def delete_thread(self, thread_id: str, owner: str, actor: Actor) -> bool:
        thread = self._threads.get(thread_id)
        if thread is None or thread.record.owner != owner:
            return False
        del self._threads[thread_id]
        for key in [key for key in self._runs if key[0] == thread_id]:
            del self._runs[key]
            self._events.pop(key, None)
        return True

    async def audit(self, actor: Actor, action: str, details: dict[str, Any]) -> None:
        entry = AuditEntry(
            len(self.audit_log) + 1,
            datetime.now(UTC),
            actor.user_id,
            action,
            None,
            details,
            actor.remote_addr,
        )
        self.audit_log.append(entry)

    async def list_audit(
        self, limit: int, before_id: int | None = None, actor: str | None = None
    ) -> list[AuditEntry]:
        found = [
            entry
            for entry in reversed(self.audit_log)
            if (before_id is None or entry.id < before_id) and actor in (None, entry.actor)
        ]
        return found[:limit]

    async def recover(self) -> int:
        return 0  # nothing survives a restart to be recovered

    async def check(self) -> None:
        return None  # always answers


class MemoryDocumentStore:
    """Knowledge-base documents and jobs in this process (CITADEL_STORE=memory)."""

    def __init__(self) -> None:
        self._documents: dict[tuple[str, str], DocumentRecord] = {}
        self._jobs: dict[str, IngestJob] = {}

    async def get_document(self, collection: str, document_id: str) -> DocumentRecord | None:
        return self._documents.get((collection, document_id))

    async def put_document(self, record: DocumentRecord, actor: Actor) -> None:
        stamped = dataclasses.replace(record, updated_at=datetime.now(UTC))
        self._documents[(record.collection, record.document_id)] = stamped

    async def delete_document(
        self, collection: str, document_id: str, actor: Actor
    ) -> DocumentRecord | None:
        return self._documents.pop((collection, document_id), None)

    async def list_documents(self, collection: str) -> list[DocumentRecord]:
        found = [record for key, record in self._documents.items() if key[0] == collection]
        return sorted(found, key=lambda record: (record.source, record.document_id))

    async def save_job(self, job: IngestJob) -> None:
        now = datetime.now(UTC)
        saved = copy.deepcopy(job)
        saved.created_at = saved.created_at or now
        if saved.status is not JobStatus.QUEUED:
            saved.started_at = saved.started_at or now
        if saved.status in (JobStatus.SUCCEEDED, JobStatus.PARTIAL, JobStatus.FAILED):
            saved.finished_at = saved.finished_at or now
        self._jobs[job.id] = saved

    async def get_job(self, job_id: str) -> IngestJob | None:
        job = self._jobs.get(job_id)
        return copy.deepcopy(job) if job is not None else None
