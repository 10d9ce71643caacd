"""Knowledge-base throughput: ``python -m bench.knowledge``.

* Cache hits: 10,000 distinct texts embedded once through the cache (Redis at ``REDIS_URL``,
  default the local server), then read back in calls of 256 texts by a second cache with no
  in-process memory, so every text is a Redis hit; beside it the same calls answered from the
  in-process cache, and the embedded embedder computing them (the baseline a hit replaces).
* Ingestion: ``docs/`` copied ``COPIES`` times under different names into a fresh embedded
  Qdrant engine, end to end (read, chunk, embed, upsert, record): chunks/s with a cold cache.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import redis.asyncio as redis

from agent_server.knowledge.embedders.cache import CachedEmbedder
from agent_server.knowledge.embedders.embedded import EmbeddedEmbedder
from agent_server.knowledge.ingest import SourceFile, ingest_files
from agent_server.knowledge.library import KnowledgeBase
from agent_server.knowledge.vectors.edge import EdgeVectorStore
from agent_server.store.base import Actor
from agent_server.store.documents import IngestJob
from agent_server.store.memory import MemoryDocumentStore

DOCS = Path(__file__).resolve().parent.parent / "docs"
TEXTS = 10_000
CALL = 256
COPIES = 5
REPEATS = 5
GOAL_HITS_PER_SECOND = 20_000


@dataclass(frozen=True)
class KnowledgeResult:
    redis_hits: float  # embeddings/s
    memory_hits: float
    computed: float
    ingest_chunks: int
    ingest_seconds: float

    @property
    def ingest_rate(self) -> float:
        return self.ingest_chunks / self.ingest_seconds


async def _rate(cache: CachedEmbedder, texts: list[str]) -> float:
    """Median embeddings/s over ``REPEATS`` passes of ``texts`` in calls of ``CALL``."""
    rates = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        for start in range(0, len(texts), CALL):
            await cache.embed(texts[start : start + CALL])
        rates.append(len(texts) / (time.perf_counter() - started))
    return statistics.median(rates)


async def cache_rates(embedder: EmbeddedEmbedder, redis_url: str) -> tuple[float, float, float]:
    texts = [f"passage {uuid.uuid4().hex} about the knowledge base" for _ in range(TEXTS)]
    client = redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)
    try:
        writer = CachedEmbedder(embedder, memory_entries=TEXTS, redis_client=client, ttl=600)
        started = time.perf_counter()
        await writer.embed(texts[:1024])  # the embedder's own rate, on a slice
        computed = 1024 / (time.perf_counter() - started)
        await writer.embed(texts)
        memory = await _rate(writer, texts)
        reader = CachedEmbedder(embedder, memory_entries=0, redis_client=client, ttl=600)
        from_redis = await _rate(reader, texts)
        assert reader.stats.misses == 0, "the Redis pass computed embeddings"
    finally:
        await client.aclose()
    return from_redis, memory, computed


async def ingest_rate(embedder: EmbeddedEmbedder) -> tuple[int, float]:
    sources = sorted(DOCS.glob("*.md"))
    files = [
        SourceFile.from_bytes(f"copy{copy}/{path.name}", path.read_bytes())
        for copy in range(COPIES)
        for path in sources
    ]
    with tempfile.TemporaryDirectory() as data_dir:
        vectors = EdgeVectorStore(Path(data_dir))
        try:
            knowledge = KnowledgeBase(embedder, vectors, MemoryDocumentStore())
            job = IngestJob("bench", "bench", "bench")
            started = time.perf_counter()
            await ingest_files(knowledge, job, files, Actor("bench"))
            elapsed = time.perf_counter() - started
        finally:
            await vectors.aclose()
    return job.chunks_embedded, elapsed


async def measure(redis_url: str) -> KnowledgeResult:
    embedder = EmbeddedEmbedder()
    try:
        hits = await cache_rates(embedder, redis_url)
        chunks, seconds = await ingest_rate(embedder)
    finally:
        await embedder.aclose()
    return KnowledgeResult(*hits, chunks, seconds)


def report(result: KnowledgeResult) -> str:
    met = result.redis_hits >= GOAL_HITS_PER_SECOND
    return "\n".join(
        [
            f"Embedding cache: {TEXTS:,} distinct texts in calls of {CALL}, median of {REPEATS}.",
            "",
            "| path | embeddings/s | vs computing | goal |",
            "|---|---:|---:|---|",
            f"| Redis hits (MGET per call) | {result.redis_hits:,.0f} "
            f"| {result.redis_hits / result.computed:,.0f}x "
            f"| >= {GOAL_HITS_PER_SECOND:,} {'PASS' if met else 'FAIL'} |",
            f"| in-process hits | {result.memory_hits:,.0f} "
            f"| {result.memory_hits / result.computed:,.0f}x | |",
            f"| computed (embedded embedder) | {result.computed:,.0f} | 1x | |",
            "",
            f"Ingestion of docs/ x {COPIES} (cold cache, embedded engine): "
            f"{result.ingest_chunks:,} chunks in {result.ingest_seconds:.1f} s = "
            f"{result.ingest_rate:,.0f} chunks/s.",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    args = parser.parse_args()
    print(report(asyncio.run(measure(args.redis_url))))


if __name__ == "__main__":
    main()
