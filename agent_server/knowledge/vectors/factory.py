"""Pick the vector store: a Qdrant server when a URL is configured, else the embedded engine."""

from __future__ import annotations

from pathlib import Path

from agent_server.knowledge.vectors.base import VectorStore


def open_vector_store(qdrant_url: str | None, api_key: str | None, data_dir: Path) -> VectorStore:
    """Imports lazily, so each mode needs only its own package."""
    if qdrant_url:
        from agent_server.knowledge.vectors.qdrant import QdrantVectorStore

        return QdrantVectorStore(qdrant_url, api_key)
    from agent_server.knowledge.vectors.edge import EdgeVectorStore

    return EdgeVectorStore(data_dir)
