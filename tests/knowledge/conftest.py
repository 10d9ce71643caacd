"""Knowledge-base fixtures on real parts: the embedded embedder (all-MiniLM-L6-v2 on
onnxruntime), the Qdrant engine in a temporary directory, Postgres in a fresh schema."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import asyncpg
import pytest

from agent_server.knowledge.embedders.base import Embedder, Vectors
from agent_server.knowledge.embedders.embedded import EmbeddedEmbedder
from agent_server.knowledge.library import ChunkingSettings, KnowledgeBase
from agent_server.knowledge.vectors.edge import EdgeVectorStore
from agent_server.store.postgres_documents import PostgresDocumentStore
from tests.support.database import isolated_database_url, migrated_pool


class RecordingEmbedder:
    """The real embedder, with a record of every text it was asked to embed (a spy)."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self.provider, self.model, self.dimensions = inner.provider, inner.model, inner.dimensions
        self.texts: list[str] = []

    async def embed(self, texts: Sequence[str]) -> Vectors:
        self.texts += texts
        return await self.inner.embed(texts)

    async def check(self) -> None:
        await self.inner.check()

    async def aclose(self) -> None:
        pass  # the session's embedder outlives each test


@pytest.fixture(scope="session")
async def embedded_embedder() -> AsyncIterator[EmbeddedEmbedder]:
    embedder = EmbeddedEmbedder()
    yield embedder
    await embedder.aclose()


@pytest.fixture
async def pool() -> AsyncIterator[asyncpg.Pool]:
    async with isolated_database_url() as url, migrated_pool(url, max_size=4) as pool:
        yield pool


@pytest.fixture
async def knowledge(
    embedded_embedder: EmbeddedEmbedder, pool: asyncpg.Pool, tmp_path: Path
) -> AsyncIterator[KnowledgeBase]:
    vectors = EdgeVectorStore(tmp_path / "data")
    knowledge = KnowledgeBase(
        RecordingEmbedder(embedded_embedder),
        vectors,
        PostgresDocumentStore(pool),
        ChunkingSettings(size=400, overlap=50),
    )
    yield knowledge
    await vectors.aclose()
