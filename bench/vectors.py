"""Vector stores side by side: qdrant-edge (EdgeVectorStore, after its background indexing)
versus qdrant-client local mode, on clustered 384-d vectors.

    .venv/bin/python bench/vectors.py [--sizes 10000 100000] [--queries 200]

Prints upsert points/s and search p50/p95 (ms) with and without a filter (source, 20 % of
points), and hybrid (dense + BM25 sparse, RRF) search, and edge's speed-up. Every point also
has a sparse vector of a 30-word text drawn from a 5,000-word Zipf vocabulary; a hybrid query
has 4 such words. Local mode is brute force in Python, so at 100k it runs only a few queries.

A search that does not return its 10 hits (a filtered one: all from the filtered source)
breaks the benchmark: it says why and exits 1 (bench/verdicts.py). ``--smoke``: 500 points,
10 queries.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

from agent_server.knowledge.sparse import SparseEncoder
from agent_server.knowledge.vectors import Point, SearchFilter, SearchRequest, VectorStore
from agent_server.knowledge.vectors.edge import EdgeVectorStore
from agent_server.knowledge.vectors.qdrant import QdrantVectorStore
from bench.verdicts import finish

DIMS = 384
COLLECTION = "bench__clustered"
FILTER = SearchFilter(sources=("src1",))
TOP = 10
SMOKE_SIZES = [500]
SMOKE_QUERIES = 10


def clustered(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((200, DIMS)).astype(np.float32)
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    v = c[rng.integers(0, 200, n)]
    v = v + 0.6 * rng.standard_normal((n, DIMS)).astype(np.float32) / np.sqrt(DIMS)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def texts(n: int, words: int, seed: int) -> list[str]:
    """Texts whose word frequencies follow Zipf's law, like prose."""
    rng = np.random.default_rng(seed)
    ranks = np.minimum(rng.zipf(1.2, (n, words)), 5_000)
    return [" ".join(f"w{r}" for r in row) for row in ranks]


def payload(i: int) -> dict[str, object]:
    return {"source": f"src{i % 5}", "document_id": f"doc{i // 20}", "tags": [f"t{i % 7}"]}


async def run(
    store: VectorStore, vectors: np.ndarray, queries: np.ndarray, problems: list[str]
) -> dict[str, float]:
    """The figures of ``store``; adds to ``problems`` each search that missed its hits."""
    encoder = SparseEncoder(chunk_chars=200)
    sparse = encoder.documents(texts(len(vectors), 30, seed=1))
    terms = [encoder.query(text) for text in texts(len(queries), 4, seed=2)]
    await store.ensure_collection(COLLECTION, DIMS)
    started = time.perf_counter()
    for s in range(0, len(vectors), 1_000):
        batch = [
            Point(str(uuid.UUID(int=i + 1)), vectors[i].tolist(), payload(i), sparse[i])
            for i in range(s, min(len(vectors), s + 1_000))
        ]
        await store.upsert(COLLECTION, batch)
    upsert = len(vectors) / (time.perf_counter() - started)
    indexing = 0.0
    if isinstance(store, EdgeVectorStore):
        started = time.perf_counter()
        await store.wait_indexed()
        indexing = time.perf_counter() - started
    out = {"upsert pts/s": upsert, "total s": 0.0, "indexing wait s": indexing}
    for label, f, hybrid in (
        ("", SearchFilter(), False),
        ("filtered ", FILTER, False),
        ("hybrid ", SearchFilter(), True),
    ):
        times, short = [], 0
        for q, words in zip(queries, terms, strict=True):
            request = SearchRequest(q.tolist(), TOP, None, f, words if hybrid else None)
            t = time.perf_counter()
            hits = await store.search(COLLECTION, request)
            times.append(time.perf_counter() - t)
            wanted = f.sources or {hit.payload.get("source") for hit in hits}
            if len(hits) != min(TOP, len(vectors)) or any(
                hit.payload.get("source") not in wanted for hit in hits
            ):
                short += 1
        if short:
            name = type(store).__name__
            problems.append(f"{name}, {label or 'dense '}search: {short} of {len(queries)} short")
        out[f"{label}p50 ms"] = float(np.median(times) * 1000)
        out[f"{label}p95 ms"] = float(np.percentile(times, 95) * 1000)
    await store.aclose()
    return out


async def measure(sizes: list[int], queries_count: int) -> tuple[list[str], list[str]]:
    """The printed tables and the problems found."""
    lines: list[str] = []
    problems: list[str] = []
    for n in sizes:
        vectors = clustered(n)
        queries = clustered(queries_count, seed=7)  # other seed: new points near the same topics
        local_queries = queries[: max(5, int(queries_count * 10_000 / n / 4))]
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            edge = await run(EdgeVectorStore(Path(tmp)), vectors, queries, problems)
            edge["total s"] = time.perf_counter() - t
        t = time.perf_counter()
        local = await run(QdrantVectorStore(location=":memory:"), vectors, local_queries, problems)
        local["total s"] = time.perf_counter() - t
        lines.append(f"\n{n:,} points, {DIMS}-d, {len(queries)} / {len(local_queries)} queries")
        lines.append(f"{'':18s}{'edge':>10s}{'local':>10s}{'ratio':>10s}")
        for key in edge:
            ratio = local[key] / edge[key] if edge[key] else float("nan")
            if key == "upsert pts/s":
                ratio = 1 / ratio
            lines.append(f"{key:18s}{edge[key]:10.2f}{local[key]:10.2f}{ratio:9.1f}x")
    return lines, problems


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--smoke", action="store_true", help="500 points: does it work?")
    args = parser.parse_args()
    sizes, queries = (SMOKE_SIZES, SMOKE_QUERIES) if args.smoke else (args.sizes, args.queries)
    lines, problems = asyncio.run(measure(sizes, queries))
    finish("\n".join(lines), problems)


if __name__ == "__main__":
    main()
