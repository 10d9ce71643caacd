"""Knowledge-base throughput: ``python -m bench.knowledge``.

* Cache hits: 10,000 distinct texts embedded once through the cache (Redis at ``REDIS_URL``,
  default the local server), then read back in calls of 256 texts by a second cache with no
  in-process memory, so every text is a Redis hit; beside it the same calls answered from the
  in-process cache, and the embedded embedder computing them (the baseline a hit replaces).
* Ingestion: ``docs/`` copied ``COPIES`` times under different names into a fresh embedded
  Qdrant engine, end to end (read, chunk, embed, upsert, record): chunks/s with a cold cache.

A Redis pass that computed embeddings (Redis unreachable: the cache falls back) or an
ingestion with file errors or no chunks breaks the benchmark: the goal line says FAIL, the
process exits 1 (bench/verdicts.py). ``--smoke``: 300 texts, one pass, three small pages of
docs/; the goal is not evaluated.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
import uuid
from dataclasses import dataclass, field
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
from bench.verdicts import figure, finish, quotient, verdict

DOCS = Path(__file__).resolve().parent.parent / "docs"
TEXTS = 10_000
CALL = 256
COPIES = 5
REPEATS = 5
GOAL_HITS_PER_SECOND = 20_000


@dataclass(frozen=True)
class Sizes:
    texts: int = TEXTS
    copies: int = COPIES
    repeats: int = REPEATS
    pages: tuple[str, ...] | None = None  # of docs/ to ingest; None: all
    smoke: bool = False


FULL = Sizes()
SMOKE = Sizes(
    texts=300,
    copies=1,
    repeats=1,
    pages=("getting-started.md", "durability.md", "models.md"),
    smoke=True,
)


@dataclass(frozen=True)
class KnowledgeResult:
    redis_hits: float  # embeddings/s
    memory_hits: float
    computed: float
    ingest_chunks: int
    ingest_seconds: float
    sizes: Sizes = FULL
    problems: list[str] = field(default_factory=list)

    @property
    def ingest_rate(self) -> float | None:
        return quotient(self.ingest_chunks, self.ingest_seconds)

    def broken(self) -> list[str]:
        return self.problems


async def _rate(cache: CachedEmbedder, texts: list[str], repeats: int) -> float:
    """Median embeddings/s over ``repeats`` passes of ``texts`` in calls of ``CALL``."""
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        for start in range(0, len(texts), CALL):
            await cache.embed(texts[start : start + CALL])
        rates.append(len(texts) / (time.perf_counter() - started))
    return statistics.median(rates)


async def cache_rates(
    embedder: EmbeddedEmbedder, redis_url: str, sizes: Sizes, problems: list[str]
) -> tuple[float, float, float]:
    texts = [f"passage {uuid.uuid4().hex} about the knowledge base" for _ in range(sizes.texts)]
    computed_slice = texts[: min(1024, len(texts))]
    client = redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)
    try:
        writer = CachedEmbedder(embedder, memory_entries=sizes.texts, redis_client=client, ttl=600)
        started = time.perf_counter()
        await writer.embed(computed_slice)  # the embedder's own rate, on a slice
        computed = len(computed_slice) / (time.perf_counter() - started)
        await writer.embed(texts)
        memory = await _rate(writer, texts, sizes.repeats)
        reader = CachedEmbedder(embedder, memory_entries=0, redis_client=client, ttl=600)
        from_redis = await _rate(reader, texts, sizes.repeats)
        expected = sizes.texts * sizes.repeats
        if reader.stats.misses or reader.stats.redis_hits != expected:
            problems.append(
                f"the Redis pass at {redis_url} had {reader.stats.redis_hits:,} hits of "
                f"{expected:,} and computed {reader.stats.misses:,} embeddings"
            )
    finally:
        await client.aclose()
    return from_redis, memory, computed


async def ingest_rate(
    embedder: EmbeddedEmbedder, sizes: Sizes, problems: list[str]
) -> tuple[int, float]:
    sources = sorted(
        path for path in DOCS.glob("*.md") if path.name in (sizes.pages or [path.name])
    )
    files = [
        SourceFile.from_bytes(f"copy{copy}/{path.name}", path.read_bytes())
        for copy in range(sizes.copies)
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
    if job.errors or not job.chunks_embedded:
        problems.append(
            f"ingestion: {job.chunks_embedded} chunks embedded, {len(job.errors)} files failed"
            + (f" (e.g. {job.errors[0]})" if job.errors else "")
        )
    return job.chunks_embedded, elapsed


async def measure(redis_url: str, sizes: Sizes = FULL) -> KnowledgeResult:
    problems: list[str] = []
    embedder = EmbeddedEmbedder()
    try:
        hits = await cache_rates(embedder, redis_url, sizes, problems)
        chunks, seconds = await ingest_rate(embedder, sizes, problems)
    finally:
        await embedder.aclose()
    return KnowledgeResult(*hits, chunks, seconds, sizes, problems)


def report(result: KnowledgeResult) -> str:
    sizes = result.sizes
    met = result.redis_hits >= GOAL_HITS_PER_SECOND
    shown = verdict(met, broken=bool(result.broken()), smoke=sizes.smoke)
    pages = "" if sizes.pages is None else f" ({', '.join(sizes.pages)})"
    return "\n".join(
        [
            f"Embedding cache: {sizes.texts:,} distinct texts in calls of {CALL}, median of "
            f"{sizes.repeats}.",
            "",
            "| path | embeddings/s | vs computing | goal |",
            "|---|---:|---:|---|",
            f"| Redis hits (MGET per call) | {result.redis_hits:,.0f} "
            f"| {result.redis_hits / result.computed:,.0f}x "
            f"| >= {GOAL_HITS_PER_SECOND:,} {shown} |",
            f"| in-process hits | {result.memory_hits:,.0f} "
            f"| {result.memory_hits / result.computed:,.0f}x | |",
            f"| computed (embedded embedder) | {result.computed:,.0f} | 1x | |",
            "",
            f"Ingestion of docs/{pages} x {sizes.copies} (cold cache, embedded engine): "
            f"{result.ingest_chunks:,} chunks in {result.ingest_seconds:.1f} s = "
            f"{figure(result.ingest_rate, ',.0f')} chunks/s.",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    parser.add_argument("--smoke", action="store_true", help="300 texts: does it work?")
    args = parser.parse_args()
    result = asyncio.run(measure(args.redis_url, SMOKE if args.smoke else FULL))
    finish(report(result), result.broken())


if __name__ == "__main__":
    main()
