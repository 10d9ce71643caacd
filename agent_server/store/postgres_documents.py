"""Knowledge-base documents and ingestion jobs in Postgres (migration 0002)."""

from __future__ import annotations

import uuid
from dataclasses import asdict
from typing import Any

import asyncpg

from agent_server.store.base import Actor
from agent_server.store.documents import DocumentRecord, FileError, IngestJob, JobStatus
from agent_server.store.postgres import audit, db_errors

_DOCUMENT_COLUMNS = (
    "collection, document_id, knowledge_base, source, title, content_hash, size_bytes,"
    " chunk_ids, tags, updated_at"
)


class PostgresDocumentStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def get_document(self, collection: str, document_id: str) -> DocumentRecord | None:
        async with db_errors():
            row = await self._pool.fetchrow(
                f"SELECT {_DOCUMENT_COLUMNS} FROM kb_documents"
                " WHERE collection = $1 AND document_id = $2",
                collection,
                document_id,
            )
        return None if row is None else _document(row)

    async def put_document(self, record: DocumentRecord, actor: Actor) -> None:
        async with db_errors(), self._pool.acquire() as connection, connection.transaction():
            await connection.execute(
                "INSERT INTO kb_documents (collection, document_id, knowledge_base, source, title,"
                " content_hash, size_bytes, chunk_ids, tags)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
                " ON CONFLICT (collection, document_id) DO UPDATE SET source = $4, title = $5,"
                " content_hash = $6, size_bytes = $7, chunk_ids = $8, tags = $9,"
                " updated_at = now()",
                record.collection,
                record.document_id,
                record.knowledge_base,
                record.source,
                record.title,
                record.content_hash,
                record.size_bytes,
                list(record.chunk_ids),
                list(record.tags),
            )
            await audit(connection, actor, "document.ingest", None, _details(record))

    async def delete_document(
        self, collection: str, document_id: str, actor: Actor
    ) -> DocumentRecord | None:
        async with db_errors(), self._pool.acquire() as connection, connection.transaction():
            row = await connection.fetchrow(
                f"DELETE FROM kb_documents WHERE collection = $1 AND document_id = $2"
                f" RETURNING {_DOCUMENT_COLUMNS}",
                collection,
                document_id,
            )
            if row is None:
                return None
            record = _document(row)
            await audit(connection, actor, "document.delete", None, _details(record))
        return record

    async def list_documents(self, collection: str) -> list[DocumentRecord]:
        async with db_errors():
            rows = await self._pool.fetch(
                f"SELECT {_DOCUMENT_COLUMNS} FROM kb_documents WHERE collection = $1"
                " ORDER BY source, document_id",
                collection,
            )
        return [_document(row) for row in rows]

    async def save_job(self, job: IngestJob) -> None:
        async with db_errors():
            await self._pool.execute(
                "INSERT INTO ingest_jobs (id, knowledge_base, owner, status, files_total,"
                " files_done, files_unchanged, chunks_embedded, errors, started_at, finished_at)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9,"
                "  CASE WHEN $4 = 'queued' THEN NULL ELSE now() END, NULL)"
                " ON CONFLICT (id) DO UPDATE SET status = $4, files_total = $5, files_done = $6,"
                " files_unchanged = $7, chunks_embedded = $8, errors = $9,"
                " started_at = coalesce(ingest_jobs.started_at,"
                "  CASE WHEN $4 = 'queued' THEN NULL ELSE now() END),"
                " finished_at = CASE WHEN $4 IN ('succeeded', 'partial', 'failed')"
                "  THEN coalesce(ingest_jobs.finished_at, now()) END",
                uuid.UUID(job.id),
                job.knowledge_base,
                job.owner,
                job.status.value,
                job.files_total,
                job.files_done,
                job.files_unchanged,
                job.chunks_embedded,
                [asdict(error) for error in job.errors],
            )

    async def get_job(self, job_id: str) -> IngestJob | None:
        try:
            key = uuid.UUID(job_id)
        except ValueError:
            return None
        async with db_errors():
            row = await self._pool.fetchrow("SELECT * FROM ingest_jobs WHERE id = $1", key)
        if row is None:
            return None
        return IngestJob(
            id=str(row["id"]),
            knowledge_base=row["knowledge_base"],
            owner=row["owner"],
            status=JobStatus(row["status"]),
            files_total=row["files_total"],
            files_done=row["files_done"],
            files_unchanged=row["files_unchanged"],
            chunks_embedded=row["chunks_embedded"],
            errors=[FileError(**item) for item in row["errors"]],
            created_at=row["created_at"],
            started_at=row["started_at"],
            finished_at=row["finished_at"],
        )


def _document(row: asyncpg.Record) -> DocumentRecord:
    return DocumentRecord(
        collection=row["collection"],
        document_id=row["document_id"],
        knowledge_base=row["knowledge_base"],
        source=row["source"],
        title=row["title"],
        content_hash=row["content_hash"],
        size_bytes=row["size_bytes"],
        chunk_ids=tuple(row["chunk_ids"]),
        tags=tuple(row["tags"]),
        updated_at=row["updated_at"],
    )


def _details(record: DocumentRecord) -> dict[str, Any]:
    return {
        "collection": record.collection,
        "document_id": record.document_id,
        "source": record.source,
        "chunks": len(record.chunk_ids),
    }
