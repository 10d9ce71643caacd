"""Ingesting many files as one job: each file on its own, so a bad one is reported and the
batch goes on; progress after every file, for the CLI's progress bar and for
``GET /rag/jobs/{id}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent_server.knowledge.documents import DocumentError, media_type_of
from agent_server.knowledge.errors import RetrievalUnavailable
from agent_server.knowledge.library import Ingested, KnowledgeBase, Outcome
from agent_server.store.base import Actor
from agent_server.store.documents import DocumentStore, FileError, IngestJob, JobStatus
from agent_server.tasks import stop_tasks

logger = logging.getLogger(__name__)

Progress = Callable[[IngestJob, Ingested | None], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class SourceFile:
    """A file to ingest: its name (the document's source) and how to get its bytes."""

    name: str
    read: Callable[[], bytes]
    content_type: str | None = None

    @classmethod
    def from_bytes(cls, name: str, data: bytes, content_type: str | None = None) -> SourceFile:
        return cls(name, lambda: data, content_type)


def files_under(paths: Sequence[Path]) -> list[SourceFile]:
    """Every file named, and every readable file under a named folder, by path, each named by
    its path as given so re-ingesting the same tree finds the same documents.

    Inside folders, hidden files and types no reader knows (a docs tree's images, dashboards
    and configs) are skipped; a file named directly is always tried, so its refusal is reported.
    """
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(
                item
                for item in path.rglob("*")
                if item.is_file()
                and not any(part.startswith(".") for part in item.relative_to(path).parts)
                and _readable(item)
            )
        else:
            found.append(path)
    return [SourceFile(str(item), item.read_bytes) for item in found]


def _readable(path: Path) -> bool:
    try:
        media_type_of(path.name)
    except DocumentError:
        return False
    return True


async def ingest_files(
    knowledge: KnowledgeBase,
    job: IngestJob,
    files: Iterable[SourceFile],
    actor: Actor,
    *,
    tags: Sequence[str] = (),
    progress: Progress | None = None,
) -> IngestJob:
    """Ingest ``files`` into ``job.knowledge_base``, updating ``job`` as it goes."""
    job.status = JobStatus.RUNNING
    if progress is not None:
        await progress(job, None)
    ingested = 0
    for source in files:
        result: Ingested | None = None
        try:
            data = await asyncio.to_thread(source.read)
            result = await knowledge.ingest(
                job.knowledge_base,
                source.name,
                data,
                actor,
                content_type=source.content_type,
                tags=tags,
            )
        except DocumentError as error:
            job.errors.append(FileError(source.name, error.code, error.message))
        except RetrievalUnavailable as error:
            job.errors.append(FileError(source.name, error.code, str(error)))
        except OSError as error:
            job.errors.append(FileError(source.name, "unreadable", str(error)))
        else:
            ingested += 1
            job.chunks_embedded += result.embedded
            job.files_unchanged += result.outcome is Outcome.UNCHANGED
        job.files_done += 1
        if progress is not None:
            await progress(job, result)
    job.status = (
        JobStatus.SUCCEEDED
        if not job.errors
        else JobStatus.PARTIAL
        if ingested
        else JobStatus.FAILED
    )
    if progress is not None:
        await progress(job, None)
    return job


def job_json(job: IngestJob) -> dict[str, Any]:
    """The job as clients see it (``GET /rag/jobs/{id}``, the admin feed)."""
    return {
        "id": job.id,
        "knowledgeBase": job.knowledge_base,
        "status": job.status.value,
        "filesTotal": job.files_total,
        "filesDone": job.files_done,
        "filesUnchanged": job.files_unchanged,
        "chunksEmbedded": job.chunks_embedded,
        "errors": [
            {"file": error.file, "code": error.code, "message": error.message}
            for error in job.errors
        ],
        "createdAt": job.created_at.isoformat() if job.created_at else None,
        "finishedAt": job.finished_at.isoformat() if job.finished_at else None,
    }


Announce = Callable[[IngestJob], Awaitable[None]]


class IngestJobs:
    """Background ingestion for ``POST /rag/ingest``: the request returns the queued job,
    the work goes on in a task, and the job row says how far it got."""

    def __init__(
        self, knowledge: KnowledgeBase, documents: DocumentStore, announce: Announce | None = None
    ) -> None:
        """``announce`` is told of each step of every job (the admin feed); its failures
        are logged, never the job's."""
        self._knowledge = knowledge
        self._documents = documents
        self._announce = announce
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(
        self,
        knowledge_base: str,
        files: list[SourceFile],
        actor: Actor,
        tags: Sequence[str] = (),
    ) -> IngestJob:
        job = IngestJob(str(uuid.uuid4()), knowledge_base, actor.user_id, files_total=len(files))
        await self._save(job)
        task = asyncio.create_task(self._run(job, files, actor, tags), name=f"ingest {job.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return job

    async def _save(self, job: IngestJob) -> None:
        await self._documents.save_job(job)
        if self._announce is not None:
            try:
                await self._announce(job)
            except Exception as error:
                logger.warning("ingestion job %s not announced: %s", job.id, error)

    async def get(self, job_id: str) -> IngestJob | None:
        return await self._documents.get_job(job_id)

    async def wait(self) -> None:
        """Until every submitted job has ended (tests, shutdown)."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    async def aclose(self) -> None:
        await stop_tasks(list(self._tasks))

    async def _run(
        self, job: IngestJob, files: list[SourceFile], actor: Actor, tags: Sequence[str]
    ) -> None:
        async def save(job: IngestJob, _: Ingested | None) -> None:
            await self._save(job)

        try:
            await ingest_files(self._knowledge, job, files, actor, tags=tags, progress=save)
        except asyncio.CancelledError:
            job.status = JobStatus.FAILED
            job.errors.append(FileError("", "cancelled", "the server stopped during this job"))
            with contextlib.suppress(Exception):
                await self._save(job)
            raise
        except Exception:
            logger.exception("ingestion job %s failed", job.id)
            job.status = JobStatus.FAILED
            with contextlib.suppress(Exception):
                await self._save(job)
