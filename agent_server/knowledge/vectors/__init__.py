"""Vector stores of the knowledge base: see :mod:`.base` for the interface."""

from agent_server.knowledge.vectors.base import (
    FILTER_FIELDS,
    Hit,
    Point,
    SearchFilter,
    SearchRequest,
    SparseVector,
    VectorStore,
    collection_name,
)
from agent_server.knowledge.vectors.factory import open_vector_store

__all__ = [
    "FILTER_FIELDS",
    "Hit",
    "Point",
    "SearchFilter",
    "SearchRequest",
    "SparseVector",
    "VectorStore",
    "collection_name",
    "open_vector_store",
]
