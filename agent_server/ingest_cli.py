"""``citadel ingest PATH... [--kb NAME] [--tag TAG]... [--prune]``: files into the knowledge
base, in this process, with a progress line and a summary.

It opens the same database, embedder and vector store the server uses (the embedded ones
under the data directory when no URLs are set). ``--prune`` deletes the documents of the base
that came from under the given paths and are no longer there.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from agent_server.config import Settings
from agent_server.knowledge.errors import RetrievalUnavailable
from agent_server.knowledge.ingest import SourceFile, files_under, ingest_files
from agent_server.knowledge.library import Ingested, KnowledgeBase, Outcome
from agent_server.services import open_database, open_embedder, open_knowledge, open_redis
from agent_server.store.base import Actor, StorageUnavailable
from agent_server.store.documents import DocumentStore, IngestJob, JobStatus

ACTOR = Actor("cli")


class ProgressLine:
    """One status line, rewritten in place on a terminal, printed every 10 files otherwise."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.started = time.monotonic()
        self.counts = {outcome: 0 for outcome in Outcome}

    async def __call__(self, job: IngestJob, result: Ingested | None) -> None:
        if result is not None:
            self.counts[result.outcome] += 1
        elapsed = max(time.monotonic() - self.started, 1e-9)
        line = (
            f"files {job.files_done}/{job.files_total}  chunks embedded {job.chunks_embedded}"
            f"  {job.files_done / elapsed:.1f} files/s  {job.chunks_embedded / elapsed:.1f} emb/s"
            f"  failed {len(job.errors)}"
        )
        if self.out.isatty():
            self.out.write(f"\r{line}")
            self.out.flush()
        elif result is None or job.files_done % 10 == 0:
            print(line, file=self.out)

    def summary(self, job: IngestJob) -> str:
        elapsed = time.monotonic() - self.started
        added, updated, unchanged = (self.counts[o] for o in Outcome)
        return (
            f"{job.files_total} files in {elapsed:.1f} s: {added} added, {updated} updated,"
            f" {unchanged} unchanged, {len(job.errors)} failed;"
            f" {job.chunks_embedded} chunks embedded"
        )


async def run_ingest(
    paths: Sequence[Path],
    settings: Settings,
    *,
    knowledge_base: str | None = None,
    tags: Sequence[str] = (),
    prune: bool = False,
    out: TextIO = sys.stderr,
) -> int:
    """Exit status: 0 all files in, 1 some failed or nothing could be done."""
    missing = [str(path) for path in paths if not path.exists()]
    if missing:
        print(f"error: no such file or folder: {', '.join(missing)}", file=out)
        return 1
    base = knowledge_base or settings.knowledge_base
    try:
        async with contextlib.AsyncExitStack() as resources:
            documents = await _document_store(settings, resources)
            embedder = await open_embedder(settings, resources, open_redis(settings, resources))
            knowledge = await open_knowledge(settings, embedder, documents, resources)
            progress = ProgressLine(out)
            job = IngestJob("cli", base, ACTOR.user_id)
            files = files_under(paths)
            job.files_total = len(files)
            await ingest_files(knowledge, job, files, ACTOR, tags=tags, progress=progress)
            if out.isatty():
                out.write("\n")
            pruned = await _prune(knowledge, base, paths, files) if prune else 0
    except (StorageUnavailable, RetrievalUnavailable) as error:
        print(f"\nerror: {error}", file=out)
        return 1
    for error in job.errors:
        print(f"  {error.file}: {error.code}: {error.message}", file=out)
    print(progress.summary(job) + (f"; {pruned} removed" if prune else ""), file=out)
    return 0 if job.status is JobStatus.SUCCEEDED else 1


async def _document_store(
    settings: Settings, resources: contextlib.AsyncExitStack
) -> DocumentStore:
    from agent_server.store.postgres_documents import PostgresDocumentStore

    return PostgresDocumentStore(await open_database(settings, resources))


async def _prune(
    knowledge: KnowledgeBase, base: str, paths: Sequence[Path], files: Sequence[SourceFile]
) -> int:
    present = {item.name for item in files}
    roots = [str(path).rstrip("/") for path in paths]
    removed = 0
    for record in await knowledge.documents.list_documents(knowledge.collection(base)):
        under = any(record.source == root or record.source.startswith(f"{root}/") for root in roots)
        if under and record.source not in present:
            removed += await knowledge.delete(base, record.document_id, ACTOR)
    return removed
