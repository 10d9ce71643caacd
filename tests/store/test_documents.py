"""Knowledge-base document records and ingestion jobs: Postgres (local and embedded) and the
in-memory store behave alike."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator

import pytest

from agent_server.store.base import Actor
from agent_server.store.documents import (
    DocumentRecord,
    DocumentStore,
    FileError,
    IngestJob,
    JobStatus,
)
from agent_server.store.memory import MemoryDocumentStore
from agent_server.store.postgres_documents import PostgresDocumentStore
from tests.support.database import LOCAL_DATABASE, isolated_database_url, migrated_pool

ACTOR = Actor("alice", "127.0.0.1")


@pytest.fixture(params=["memory", "local", "embedded"])
async def documents(
    request: pytest.FixtureRequest, embedded_postgres_url: str
) -> AsyncIterator[DocumentStore]:
    if request.param == "memory":
        yield MemoryDocumentStore()
        return
    base = LOCAL_DATABASE if request.param == "local" else embedded_postgres_url
    async with isolated_database_url(base) as url, migrated_pool(url) as pool:
        yield PostgresDocumentStore(pool)


def record(document_id: str, chunks: tuple[str, ...], content_hash: str = "h1") -> DocumentRecord:
    return DocumentRecord(
        collection="docs__all-minilm",
        document_id=document_id,
        knowledge_base="docs",
        source=f"{document_id}.md",
        title=document_id.title(),
        content_hash=content_hash,
        size_bytes=123,
        chunk_ids=chunks,
    )


async def test_documents_are_stored_replaced_listed_and_deleted(documents):
    first = [str(uuid.uuid4()) for _ in range(3)]
    await documents.put_document(record("intro", tuple(first)), ACTOR)
    await documents.put_document(record("api", ("c",)), ACTOR)
    stored = await documents.get_document("docs__all-minilm", "intro")
    assert stored is not None and stored.chunk_ids == tuple(first) and stored.updated_at

    changed = dataclasses.replace(record("intro", ("x", "y"), "h2"), tags=("guide", "api"))
    await documents.put_document(changed, ACTOR)
    replaced = await documents.get_document("docs__all-minilm", "intro")
    assert replaced is not None
    assert (replaced.content_hash, replaced.chunk_ids, replaced.tags) == (
        "h2",
        ("x", "y"),
        ("guide", "api"),
    )
    listed = await documents.list_documents("docs__all-minilm")
    assert [item.source for item in listed] == ["api.md", "intro.md"]
    assert await documents.list_documents("other__all-minilm") == []

    removed = await documents.delete_document("docs__all-minilm", "intro", ACTOR)
    assert removed is not None and removed.chunk_ids == ("x", "y")
    assert await documents.get_document("docs__all-minilm", "intro") is None
    assert await documents.delete_document("docs__all-minilm", "intro", ACTOR) is None


async def test_a_job_records_its_progress_and_end(documents):
    job = IngestJob(str(uuid.uuid4()), "docs", "alice")
    await documents.save_job(job)
    queued = await documents.get_job(job.id)
    assert queued is not None and queued.status is JobStatus.QUEUED
    assert queued.created_at and queued.started_at is None

    job.status, job.files_total, job.files_done, job.chunks_embedded = JobStatus.RUNNING, 3, 1, 7
    await documents.save_job(job)
    running = await documents.get_job(job.id)
    assert running is not None and running.started_at and running.finished_at is None
    assert (running.files_total, running.files_done, running.chunks_embedded) == (3, 1, 7)

    job.status, job.files_done = JobStatus.PARTIAL, 3
    job.errors = [FileError("broken.pdf", "corrupt", "not a PDF")]
    await documents.save_job(job)
    ended = await documents.get_job(job.id)
    assert ended is not None and ended.status is JobStatus.PARTIAL and ended.finished_at
    assert ended.errors == [FileError("broken.pdf", "corrupt", "not a PDF")]
    assert await documents.get_job(str(uuid.uuid4())) is None
    assert await documents.get_job("not-a-uuid") is None
