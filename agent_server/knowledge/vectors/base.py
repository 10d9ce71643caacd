"""The one interface every vector store implements: the Qdrant server through qdrant-client,
or the Qdrant engine in-process (qdrant-edge).

A collection holds the chunks of one knowledge base embedded by one model; its name says
both (see :func:`collection_name`). Every point has a dense vector and, for hybrid search, a
sparse one (:data:`SPARSE_VECTOR`, term weights whose IDF the store applies). Every point's
payload carries at least the fields that filters use, each with a keyword payload index:
``source``, ``document_id``, ``tags``. Failures are raised as :class:`RetrievalUnavailable`.

Hybrid search fuses two candidate lists, the dense and the sparse nearest, by reciprocal rank
(Qdrant's RRF): a chunk that holds the query's rare words (an identifier, an error code, a
setting's name) is found even when its meaning is far from the question's. The score
threshold applies to the dense candidates (term-match scores have no fixed scale); a hit's
score is then its fused score. A collection made before sparse vectors existed answers with
dense search alone.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

FILTER_FIELDS = ("source", "document_id", "tags")
SPARSE_VECTOR = "bm25"  # the sparse vector's name in every collection
HYBRID_CANDIDATES = 4  # candidates per wanted hit taken from each list before fusion


@dataclass(frozen=True, slots=True)
class SparseVector:
    """Term weights by term index (a hash of the term); both lists have the same length."""

    indices: Sequence[int]
    values: Sequence[float]


@dataclass(frozen=True, slots=True)
class Point:
    id: str  # a UUID string: deterministic for a chunk (see chunking), so re-upserts replace
    vector: Sequence[float]
    payload: dict[str, Any]
    sparse: SparseVector | None = None


@dataclass(frozen=True, slots=True)
class Hit:
    id: str
    score: float
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class SearchFilter:
    """Every given field must match (any of its values); ``tags`` matches any shared tag."""

    sources: tuple[str, ...] = ()
    document_ids: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.sources or self.document_ids or self.tags)


@dataclass(frozen=True, slots=True)
class SearchRequest:
    vector: Sequence[float]
    limit: int = 5
    score_threshold: float | None = None
    filter: SearchFilter = field(default_factory=SearchFilter)
    sparse: SparseVector | None = None  # given: hybrid search (see the module's docstring)

    @property
    def candidates(self) -> int:
        """How many of each list hybrid search fuses."""
        return max(self.limit * HYBRID_CANDIDATES, 20)


@runtime_checkable
class VectorStore(Protocol):
    kind: str  # "embedded" or "qdrant"

    async def ensure_collection(self, name: str, dimensions: int) -> None:
        """Create the collection (cosine distance, the sparse vector) and its payload indexes
        if missing; raise ``ValueError`` if it exists with other dimensions."""
        ...

    async def upsert(self, collection: str, points: Sequence[Point]) -> None: ...

    async def delete_document(self, collection: str, document_id: str) -> int:
        """Remove every point of ``document_id``; how many there were."""
        ...

    async def delete_points(self, collection: str, ids: Sequence[str]) -> None: ...

    async def search(self, collection: str, request: SearchRequest) -> list[Hit]:
        """The nearest points, best first, at or above ``score_threshold``; fused with the
        sparse nearest when ``request.sparse`` is given and the collection has sparse vectors."""
        ...

    async def count(self, collection: str, filter: SearchFilter | None = None) -> int: ...

    async def check(self) -> None: ...

    async def aclose(self) -> None: ...


def collection_name(knowledge_base: str, model: str) -> str:
    """``docs`` + ``all-minilm`` -> ``docs__all-minilm``: one collection per base and model."""
    return f"{_slug(knowledge_base)}__{_slug(model)}"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9_-]+", "-", text.lower()).strip("-") or "default"
