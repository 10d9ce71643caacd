"""The knowledge base as the rest of the server sees it: add a file, remove a document,
search. It ties the document reader, the embedder, the vector store and the document records
together; none of them knows about the others.

Re-ingestion is cheap and convergent. A file whose bytes and tags are unchanged writes
nothing. A changed file embeds only chunks whose ids are new (a chunk id is a hash of what is
embedded), upserts them, deletes the ids the new version no longer has, and only then records
the new chunk list: if the process dies half-way, the next ingestion of the file finishes the
job from the old record.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from agent_server.knowledge.documents import Chunk, Document, chunk, read_document
from agent_server.knowledge.embedders.base import Embedder
from agent_server.knowledge.rerank import Reranker
from agent_server.knowledge.sparse import SparseEncoder
from agent_server.knowledge.vectors.base import (
    Hit,
    Point,
    SearchFilter,
    SearchRequest,
    VectorStore,
    collection_name,
)
from agent_server.store.base import Actor
from agent_server.store.documents import DocumentRecord, DocumentStore
from protocol.errors import Refusal

RERANK_CANDIDATES = 4  # candidates per wanted hit given to the reranker


class RerankerMissing(Refusal):
    """Reranking was asked for but no rerank endpoint is configured."""

    message = "no rerank endpoint is configured; set CITADEL_RERANK_URL"

    def __init__(self) -> None:
        super().__init__("not_implemented", self.message)


class Outcome(StrEnum):
    ADDED = "added"
    UPDATED = "updated"
    UNCHANGED = "unchanged"


@dataclass(frozen=True, slots=True)
class Ingested:
    document_id: str
    source: str
    outcome: Outcome
    chunks: int  # the document's chunks now
    embedded: int  # chunks embedded by this call
    removed: int  # chunks of the previous version deleted


@dataclass(frozen=True, slots=True)
class ChunkingSettings:
    size: int = 800
    overlap: int = 100
    max_file_bytes: int = 32 * 1024 * 1024


class KnowledgeBase:
    def __init__(
        self,
        embedder: Embedder,
        vectors: VectorStore,
        documents: DocumentStore,
        chunking: ChunkingSettings | None = None,
        reranker: Reranker | None = None,
        *,
        hybrid: bool = True,
    ) -> None:
        self.embedder = embedder
        self.vectors = vectors
        self.documents = documents
        self.reranker = reranker
        self.hybrid = hybrid  # the default of searches that do not say
        # Told of each search call: (seconds, hybrid), embedding and reranking included.
        self.searches: list[Callable[[float, bool], None]] = []
        self.chunking = chunking or ChunkingSettings()
        self.sparse = SparseEncoder(self.chunking.size)
        self._ready: set[str] = set()  # collections known to exist

    def collection(self, knowledge_base: str) -> str:
        return collection_name(knowledge_base, self.embedder.model)

    async def ingest(
        self,
        knowledge_base: str,
        name: str,
        data: bytes,
        actor: Actor,
        *,
        content_type: str | None = None,
        tags: Sequence[str] = (),
    ) -> Ingested:
        """Add or update one file; raises ``DocumentError`` for a file that cannot be read
        and ``RetrievalUnavailable`` when the embedder or the vector store cannot serve."""
        document = read_document(
            name, data, knowledge_base, content_type, max_bytes=self.chunking.max_file_bytes
        )
        collection = self.collection(knowledge_base)
        tags = tuple(sorted(set(tags)))
        previous = await self.documents.get_document(collection, document.id)
        if (
            previous is not None
            and previous.content_hash == document.content_hash
            and previous.tags == tags
        ):
            return Ingested(document.id, name, Outcome.UNCHANGED, len(previous.chunk_ids), 0, 0)
        chunks = chunk(document, size=self.chunking.size, overlap=self.chunking.overlap)
        known = set(previous.chunk_ids) if previous is not None else set()
        # Tags live in every chunk's payload: new tags mean every chunk is written again.
        retag = previous is not None and previous.tags != tags
        todo = [item for item in chunks if retag or item.id not in known]
        if todo:
            texts = [item.embed_text for item in todo]
            vectors = await self.embedder.embed(texts)
            await self._ensure(collection)
            points = [
                Point(item.id, vector.tolist(), _payload(item, document, tags), sparse)
                for item, vector, sparse in zip(
                    todo, vectors, self.sparse.documents(texts), strict=True
                )
            ]
            await self.vectors.upsert(collection, points)
        stale = known - {item.id for item in chunks}
        if stale:
            await self._ensure(collection)
            await self.vectors.delete_points(collection, sorted(stale))
        record = DocumentRecord(
            collection=collection,
            document_id=document.id,
            knowledge_base=knowledge_base,
            source=name,
            title=document.title,
            content_hash=document.content_hash,
            size_bytes=len(data),
            chunk_ids=tuple(item.id for item in chunks),
            tags=tags,
        )
        await self.documents.put_document(record, actor)
        outcome = Outcome.ADDED if previous is None else Outcome.UPDATED
        return Ingested(document.id, name, outcome, len(chunks), len(todo), len(stale))

    async def delete(self, knowledge_base: str, document_id: str, actor: Actor) -> bool:
        """Remove a document and its chunks; False if there was no such document."""
        collection = self.collection(knowledge_base)
        record = await self.documents.get_document(collection, document_id)
        if record is None:
            return False
        await self._ensure(collection)
        await self.vectors.delete_document(collection, document_id)
        await self.documents.delete_document(collection, document_id, actor)
        return True

    async def search_many(
        self,
        knowledge_base: str,
        queries: Sequence[str],
        *,
        top_k: int = 5,
        score_threshold: float | None = None,
        filter: SearchFilter | None = None,
        hybrid: bool | None = None,
        rerank: bool = False,
    ) -> list[list[Hit]]:
        """For each query, the chunks nearest to it, best first; the queries are embedded
        in one call. ``hybrid`` (default :attr:`hybrid`): fuse with the chunks sharing the
        query's terms (see :mod:`.vectors.base`). ``rerank``: fetch more candidates and let
        the reranker order them (its relevance becomes the score)."""
        if rerank and self.reranker is None:
            raise RerankerMissing()
        started = time.perf_counter()
        collection = self.collection(knowledge_base)
        vectors = await self.embedder.embed(list(queries))
        await self._ensure(collection)
        limit = min(top_k * RERANK_CANDIDATES, 100) if rerank else top_k
        hybrid = self.hybrid if hybrid is None else hybrid
        found = [
            await self.vectors.search(
                collection,
                SearchRequest(
                    vector.tolist(),
                    limit,
                    score_threshold,
                    filter or SearchFilter(),
                    self.sparse.query(query) if hybrid else None,
                ),
            )
            for query, vector in zip(queries, vectors, strict=True)
        ]
        if rerank:
            found = [
                await self._reranked(query, hits, top_k)
                for query, hits in zip(queries, found, strict=True)
            ]
        for observer in self.searches:
            observer(time.perf_counter() - started, hybrid)
        return found

    async def _reranked(self, query: str, hits: list[Hit], top_k: int) -> list[Hit]:
        if not hits:
            return hits
        reranker = self.reranker  # read now: a configuration reload may have removed it
        if reranker is None:
            raise RerankerMissing()
        order = await reranker.rerank(query, [hit.payload.get("text", "") for hit in hits], top_k)
        return [Hit(hits[index].id, score, hits[index].payload) for index, score in order]

    async def search(
        self,
        knowledge_base: str,
        query: str,
        *,
        top_k: int = 5,
        score_threshold: float | None = None,
        filter: SearchFilter | None = None,
        hybrid: bool | None = None,
    ) -> list[Hit]:
        """The chunks nearest to ``query``, best first."""
        [hits] = await self.search_many(
            knowledge_base,
            [query],
            top_k=top_k,
            score_threshold=score_threshold,
            filter=filter,
            hybrid=hybrid,
        )
        return hits

    async def similarity(self, query: str, texts: Sequence[str]) -> list[float]:
        """The cosine of each of ``texts`` with ``query``, by this base's embedder (whose
        vectors are normalised): how close in meaning a sentence is to a question."""
        vectors = await self.embedder.embed([query, *texts])
        return [float(value) for value in vectors[1:] @ vectors[0]]

    async def _ensure(self, collection: str) -> None:
        if collection not in self._ready:
            await self.vectors.ensure_collection(collection, self.embedder.dimensions)
            self._ready.add(collection)


def _payload(item: Chunk, document: Document, tags: tuple[str, ...]) -> dict[str, Any]:
    return {
        **item.metadata,
        "knowledge_base": document.knowledge_base,
        "tags": list(tags),
        "text": item.text,
    }
