"""The one interface every vector store implements: the Qdrant server through qdrant-client,
or the Qdrant engine in-process (qdrant-edge).

A collection holds the chunks of one knowledge base embedded by one model; its name says
both (see :func:`collection_name`). Every point's payload carries at least the fields that
filters use, each with a keyword payload index: ``source``, ``document_id``, ``tags``.
Failures are raised as :class:`RetrievalUnavailable`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

FILTER_FIELDS = ("source", "document_id", "tags")


@dataclass(frozen=True, slots=True)
class Point:
    id: str  # a UUID string: deterministic for a chunk (see chunking), so re-upserts replace
    vector: Sequence[float]
    payload: dict[str, Any]


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


@runtime_checkable
class VectorStore(Protocol):
    kind: str  # "embedded" or "qdrant"

    async def ensure_collection(self, name: str, dimensions: int) -> None:
        """Create the collection (cosine distance) and its payload indexes if missing; raise
        ``ValueError`` if it exists with other dimensions."""
        ...

    async def upsert(self, collection: str, points: Sequence[Point]) -> None: ...

    async def delete_document(self, collection: str, document_id: str) -> int:
        """Remove every point of ``document_id``; how many there were."""
        ...

    async def delete_points(self, collection: str, ids: Sequence[str]) -> None: ...

    async def search(self, collection: str, request: SearchRequest) -> list[Hit]:
        """The nearest points, best first, at or above ``score_threshold``."""
        ...

    async def count(self, collection: str, filter: SearchFilter | None = None) -> int: ...

    async def check(self) -> None: ...

    async def aclose(self) -> None: ...


def collection_name(knowledge_base: str, model: str) -> str:
    """``docs`` + ``all-minilm`` -> ``docs__all-minilm``: one collection per base and model."""
    return f"{_slug(knowledge_base)}__{_slug(model)}"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9_-]+", "-", text.lower()).strip("-") or "default"
