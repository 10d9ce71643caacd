"""What the knowledge base records beside its vectors: documents and ingestion jobs.

The vector store holds chunks; this store says which chunks make up which document, with the
document's content hash, so that re-ingesting an unchanged file writes nothing and a changed
or deleted one removes exactly its old chunks. Jobs let ``POST /rag/ingest`` return at once
and be followed (``GET /rag/jobs/{id}``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from agent_server.store.base import Actor


@dataclass(frozen=True, slots=True)
class DocumentRecord:
    collection: str  # the knowledge base embedded by one model (vectors.base.collection_name)
    document_id: str
    knowledge_base: str
    source: str
    title: str
    content_hash: str
    size_bytes: int
    chunk_ids: tuple[str, ...]
    tags: tuple[str, ...] = ()
    updated_at: datetime | None = None  # set by the store


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    PARTIAL = "partial"  # some files failed, the others are in
    FAILED = "failed"  # nothing could be ingested


@dataclass(frozen=True, slots=True)
class FileError:
    file: str
    code: str
    message: str


@dataclass(slots=True)
class IngestJob:
    id: str
    knowledge_base: str
    owner: str
    status: JobStatus = JobStatus.QUEUED
    files_total: int = 0
    files_done: int = 0  # ingested, unchanged or failed
    files_unchanged: int = 0
    chunks_embedded: int = 0
    errors: list[FileError] = field(default_factory=list)
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


class DocumentStore(Protocol):
    async def get_document(self, collection: str, document_id: str) -> DocumentRecord | None: ...

    async def put_document(self, record: DocumentRecord, actor: Actor) -> None:
        """Insert or replace the record (audited)."""
        ...

    async def delete_document(
        self, collection: str, document_id: str, actor: Actor
    ) -> DocumentRecord | None:
        """Remove the record (audited); the removed record, or None if there was none."""
        ...

    async def list_documents(self, collection: str) -> list[DocumentRecord]:
        """Every document of the collection, by source."""
        ...

    async def save_job(self, job: IngestJob) -> None:
        """Insert or update the job as it is now."""
        ...

    async def get_job(self, job_id: str) -> IngestJob | None: ...
