"""Both vector stores behave the same: qdrant-edge in a temporary directory, and qdrant-client in
local ``:memory:`` mode, a TEST DOUBLE of the Qdrant server (the same client API over a
brute-force engine in this process: payload indexes and search parameters have no effect).

No Qdrant server can be installed here, so the server path (qdrant-client over HTTP to
``QDRANT_URL``) has never met a real server in this suite: every shared test also has a
``qdrant-server`` case, and ``test_real_server_roundtrip`` runs, only when QDRANT_URL (and
QDRANT_API_KEY) name one; without it they show as SKIPPED with the reason. Against a closed
port and a silent socket the server path is tested here always."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
import qdrant_edge as qe
from qdrant_client import models

from agent_server.knowledge.errors import RetrievalUnavailable
from agent_server.knowledge.sparse import SparseEncoder
from agent_server.knowledge.vectors import (
    Point,
    SearchFilter,
    SearchRequest,
    VectorStore,
    open_vector_store,
)
from agent_server.knowledge.vectors.edge import EdgeVectorStore
from agent_server.knowledge.vectors.qdrant import QdrantVectorStore

DIMS = 64
COLLECTION = "docs__test-model"
QDRANT_URL = os.environ.get("QDRANT_URL")


def clustered(n: int, dims: int = DIMS, centres: int = 12, seed: int = 0) -> np.ndarray:
    """Unit vectors around a few topic centres, like text embeddings (not uniform noise)."""
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centres, dims))
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    v = c[rng.integers(0, centres, n)] + 0.6 * rng.standard_normal((n, dims)) / np.sqrt(dims)
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def payload(i: int) -> dict[str, object]:
    """Ten points per document, five sources, two tags each."""
    return {
        "source": f"src{i % 5}",
        "document_id": f"doc{i // 10}",
        "tags": [f"t{i % 7}", f"u{i % 3}"],
        "text": f"chunk {i}",
    }


def points(vectors: np.ndarray, offset: int = 0) -> list[Point]:
    return [
        Point(str(uuid.UUID(int=offset + i + 1)), vectors[i].tolist(), payload(offset + i))
        for i in range(len(vectors))
    ]


def matches(p: dict[str, object], f: SearchFilter) -> bool:
    tags = p["tags"]
    assert isinstance(tags, list)
    return (
        (not f.sources or p["source"] in f.sources)
        and (not f.document_ids or p["document_id"] in f.document_ids)
        and (not f.tags or bool(set(tags) & set(f.tags)))
    )


def brute_force(vectors: np.ndarray, query: np.ndarray, f: SearchFilter, k: int) -> list[str]:
    """Exact cosine top-k among the points matching ``f``: what search must return."""
    scores = vectors @ query
    order = [int(i) for i in np.argsort(-scores) if matches(payload(int(i)), f)]
    return [str(uuid.UUID(int=i + 1)) for i in order[:k]]


NO_QDRANT_SERVER = "no Qdrant server: set QDRANT_URL (and QDRANT_API_KEY) to run this against one"


@pytest.fixture(
    params=[
        "edge",
        "qdrant-memory",
        pytest.param(
            "qdrant-server",
            marks=[pytest.mark.opt_in, pytest.mark.skipif(not QDRANT_URL, reason=NO_QDRANT_SERVER)],
        ),
    ]
)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[VectorStore]:
    if request.param == "edge":
        vs: VectorStore = EdgeVectorStore(tmp_path)
    elif request.param == "qdrant-memory":
        vs = QdrantVectorStore(location=":memory:")
    else:
        vs = QdrantVectorStore(QDRANT_URL, os.environ.get("QDRANT_API_KEY"))
    yield vs
    await vs.aclose()


@pytest.fixture
def collection() -> str:
    """A fresh collection name per test (a real server keeps collections between tests)."""
    return f"{COLLECTION}-{uuid.uuid4().hex[:8]}" if QDRANT_URL else COLLECTION


VECTORS = clustered(300)


async def filled(store: VectorStore, collection: str) -> None:
    await store.ensure_collection(collection, DIMS)
    await store.upsert(collection, points(VECTORS))


async def test_search_orders_by_similarity(store: VectorStore, collection: str) -> None:
    await filled(store, collection)
    query = VECTORS[42]
    hits = await store.search(collection, SearchRequest(query.tolist(), limit=10))
    assert [h.id for h in hits] == brute_force(VECTORS, query, SearchFilter(), 10)
    assert hits[0].id == str(uuid.UUID(int=43)) and hits[0].score == pytest.approx(1.0, abs=1e-4)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert hits[0].payload == payload(42)


async def test_score_threshold(store: VectorStore, collection: str) -> None:
    await filled(store, collection)
    query = VECTORS[7].tolist()
    scores = [h.score for h in await store.search(collection, SearchRequest(query, limit=50))]
    threshold = (scores[4] + scores[5]) / 2
    hits = await store.search(collection, SearchRequest(query, limit=50, score_threshold=threshold))
    assert len(hits) == 5 and all(h.score >= threshold for h in hits)


FILTERS = [
    SearchFilter(sources=("src1",)),
    SearchFilter(sources=("src1", "src3")),
    SearchFilter(document_ids=("doc3", "doc17")),
    SearchFilter(tags=("t2",)),
    SearchFilter(tags=("t2", "u0")),
    SearchFilter(sources=("src2",), tags=("t1", "t4")),
    SearchFilter(sources=("src0", "src4"), document_ids=("doc0", "doc20", "doc5"), tags=("u1",)),
]


@pytest.mark.parametrize("f", FILTERS, ids=lambda f: repr(f)[12:-1])
async def test_filters_match_brute_force(
    store: VectorStore, collection: str, f: SearchFilter
) -> None:
    await filled(store, collection)
    for q in (3, 150, 299):
        hits = await store.search(collection, SearchRequest(VECTORS[q].tolist(), limit=8, filter=f))
        assert [h.id for h in hits] == brute_force(VECTORS, VECTORS[q], f, 8)
        assert all(matches(h.payload, f) for h in hits)
    expected = sum(matches(payload(i), f) for i in range(len(VECTORS)))
    assert await store.count(collection, f) == expected


async def test_delete_document_removes_only_its_points(store: VectorStore, collection: str) -> None:
    await filled(store, collection)
    assert await store.delete_document(collection, "doc4") == 10
    assert await store.delete_document(collection, "doc4") == 0
    assert await store.count(collection) == 290
    assert await store.count(collection, SearchFilter(document_ids=("doc4",))) == 0
    assert await store.count(collection, SearchFilter(document_ids=("doc5",))) == 10
    await store.delete_points(collection, [str(uuid.UUID(int=1)), str(uuid.UUID(int=2))])
    assert await store.count(collection) == 288


async def test_reupsert_replaces(store: VectorStore, collection: str) -> None:
    await filled(store, collection)
    moved = [
        Point(p.id, VECTORS[0].tolist(), {**p.payload, "source": "new"})
        for p in points(VECTORS[:20])
    ]
    await store.upsert(collection, moved)
    assert await store.count(collection) == 300
    assert await store.count(collection, SearchFilter(sources=("new",))) == 20
    hits = await store.search(collection, SearchRequest(VECTORS[0].tolist(), limit=20))
    assert {h.id for h in hits} == {p.id for p in moved}


async def test_dimension_mismatch(store: VectorStore, collection: str) -> None:
    await store.ensure_collection(collection, DIMS)
    await store.ensure_collection(collection, DIMS)  # idempotent
    with pytest.raises(ValueError, match=f"{DIMS}.*{DIMS + 1}"):
        await store.ensure_collection(collection, DIMS + 1)


# Hybrid search -------------------------------------------------------------------------------

WORDS = ("postgres", "redis", "qdrant", "clerk", "livekit", "ollama", "uvicorn", "docker")


def worded(i: int) -> str:
    """Each point's text: two common words, and point 123 alone holds a rare identifier."""
    text = f"{WORDS[i % 8]} {WORDS[(i // 8) % 8]} chunk number {i}"
    return text + " CITADEL_EVENT_RETENTION" if i == 123 else text


def sparse_points(vectors: np.ndarray) -> list[Point]:
    encoder = SparseEncoder(chunk_chars=40)
    return [
        Point(p.id, p.vector, p.payload, sparse)
        for p, sparse in zip(
            points(vectors),
            encoder.documents([worded(i) for i in range(len(vectors))]),
            strict=True,
        )
    ]


async def test_hybrid_finds_the_rare_term_dense_search_misses(
    store: VectorStore, collection: str
) -> None:
    await store.ensure_collection(collection, DIMS)
    await store.upsert(collection, sparse_points(VECTORS))
    query = VECTORS[7].tolist()  # meaning: near point 7, far from point 123
    terms = SparseEncoder(chunk_chars=40).query("where is CITADEL_EVENT_RETENTION set?")
    rare = str(uuid.UUID(int=124))
    dense = await store.search(collection, SearchRequest(query, limit=5))
    hybrid = await store.search(collection, SearchRequest(query, limit=5, sparse=terms))
    assert rare not in [h.id for h in dense]
    assert rare in [h.id for h in hybrid][:2]  # the only term match ranks first in its list
    assert dense[0].id in [h.id for h in hybrid][:2]  # and the best dense match stays on top
    assert len(hybrid) == 5


async def test_hybrid_search_keeps_filters_and_the_dense_threshold(
    store: VectorStore, collection: str
) -> None:
    await store.ensure_collection(collection, DIMS)
    await store.upsert(collection, sparse_points(VECTORS))
    terms = SparseEncoder(chunk_chars=40).query("CITADEL_EVENT_RETENTION")
    only = SearchFilter(sources=("src1",))  # point 123 is in src3
    hits = await store.search(
        collection, SearchRequest(VECTORS[7].tolist(), limit=8, filter=only, sparse=terms)
    )
    assert hits and all(matches(h.payload, only) for h in hits)
    # A threshold no dense candidate reaches leaves the term matches alone.
    hits = await store.search(
        collection,
        SearchRequest(VECTORS[7].tolist(), limit=5, score_threshold=1.01, sparse=terms),
    )
    assert [h.id for h in hits] == [str(uuid.UUID(int=124))]


async def test_points_without_sparse_vectors_are_found_by_hybrid_search(
    store: VectorStore, collection: str
) -> None:
    await filled(store, collection)  # dense only, as a point embedded elsewhere would be
    terms = SparseEncoder(chunk_chars=40).query("postgres")
    hits = await store.search(
        collection, SearchRequest(VECTORS[42].tolist(), limit=3, sparse=terms)
    )
    assert [h.id for h in hits] == brute_force(VECTORS, VECTORS[42], SearchFilter(), 3)


@pytest.mark.parametrize("kind", ["edge", "qdrant-memory"])
async def test_a_collection_made_before_hybrid_search_answers_dense(
    kind: str, tmp_path: Path
) -> None:
    """An old collection (no sparse vector in its config) takes sparse points and queries."""
    vs: VectorStore
    if kind == "edge":
        old = qe.EdgeShard.create(
            str(tmp_path / "qdrant" / COLLECTION),
            qe.EdgeConfig(vectors=qe.EdgeVectorParams(size=DIMS, distance=qe.Distance.Cosine)),
        )
        old.close()
        vs = EdgeVectorStore(tmp_path)
    else:
        vs = QdrantVectorStore(location=":memory:")
        await vs._client.create_collection(
            COLLECTION,
            vectors_config=models.VectorParams(size=DIMS, distance=models.Distance.COSINE),
        )
    try:
        await vs.ensure_collection(COLLECTION, DIMS)
        await vs.upsert(COLLECTION, sparse_points(VECTORS))
        terms = SparseEncoder(chunk_chars=40).query("CITADEL_EVENT_RETENTION")
        hits = await vs.search(
            COLLECTION, SearchRequest(VECTORS[7].tolist(), limit=5, sparse=terms)
        )
        assert [h.id for h in hits] == brute_force(VECTORS, VECTORS[7], SearchFilter(), 5)
    finally:
        await vs.aclose()


# Edge only -------------------------------------------------------------------------------------


async def test_edge_persists_across_reopen(tmp_path: Path) -> None:
    first = EdgeVectorStore(tmp_path)
    await filled(first, COLLECTION)
    await first.aclose()
    again = EdgeVectorStore(tmp_path)
    try:
        assert await again.count(COLLECTION) == 300  # opens lazily, no ensure needed
        await again.ensure_collection(COLLECTION, DIMS)
        with pytest.raises(ValueError, match="64 dimensions, not 32"):
            await again.ensure_collection(COLLECTION, 32)
        hits = await again.search(COLLECTION, SearchRequest(VECTORS[9].tolist(), limit=3))
        assert hits[0].id == str(uuid.UUID(int=10)) and hits[0].payload == payload(9)
    finally:
        await again.aclose()
    with pytest.raises(RetrievalUnavailable, match="closed"):
        await again.count(COLLECTION)


async def test_edge_second_process_fails_clearly(tmp_path: Path) -> None:
    vs = EdgeVectorStore(tmp_path)
    await filled(vs, COLLECTION)
    try:
        code = (
            "import asyncio, sys; from pathlib import Path\n"
            "from agent_server.knowledge.vectors.edge import EdgeVectorStore\n"
            f"asyncio.run(EdgeVectorStore(Path({str(tmp_path)!r})).count({COLLECTION!r}))\n"
        )
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", code, stderr=asyncio.subprocess.PIPE
        )
        _, stderr = await proc.communicate()
        assert proc.returncode != 0
        assert b"in use by another process" in stderr
    finally:
        await vs.aclose()


@pytest.mark.timeout(60)  # a hang; it takes seconds, more on a busy machine
async def test_edge_background_indexing_keeps_results_exact(tmp_path: Path) -> None:
    """Upserts past the threshold queue optimize(); searches queued meanwhile, and after, match
    brute force."""
    vs = EdgeVectorStore(tmp_path, index_threshold=1_000)
    vectors = clustered(3_000, dims=128, centres=30, seed=1)
    await vs.ensure_collection(COLLECTION, 128)
    f = SearchFilter(sources=("src2",), tags=("t1", "t3", "u2"))
    queries = [vectors[i] for i in (5, 999, 1500, 2999)]
    try:
        for start in range(0, 3_000, 1_000):
            await vs.upsert(COLLECTION, points(vectors[start : start + 1_000], offset=start))
            # Submitted now, these run right after the queued optimize().
            searches = [
                vs.search(COLLECTION, SearchRequest(q.tolist(), limit=10, filter=flt))
                for q in queries
                for flt in (SearchFilter(), f)
            ]
            results = await asyncio.gather(*searches)
            visible = vectors[: start + 1_000]
            expected = [
                brute_force(visible, q, flt, 10) for q in queries for flt in (SearchFilter(), f)
            ]
            assert [[h.id for h in hits] for hits in results] == expected
        await vs.wait_indexed()
        assert isinstance(vs, EdgeVectorStore)
        entry = vs._shards[COLLECTION]
        info = entry.shard.info()
        assert info.indexed_vectors_count >= 2_000 and entry.unindexed < 1_000
        for q in queries:
            for flt in (SearchFilter(), f):
                hits = await vs.search(COLLECTION, SearchRequest(q.tolist(), limit=10, filter=flt))
                assert [h.id for h in hits] == brute_force(vectors, q, flt, 10)
    finally:
        await vs.aclose()


async def test_edge_hnsw_recall_matches_brute_force(tmp_path: Path) -> None:
    """Enough 384-d points that search goes through HNSW (past the 10 MB full-scan size), with
    broad filters that the planner cannot answer from the payload index alone."""
    vs = EdgeVectorStore(tmp_path)
    n = 12_000
    vectors = clustered(n, dims=384, centres=200, seed=2)
    rng = np.random.default_rng(3)
    try:
        await vs.ensure_collection(COLLECTION, 384)
        for start in range(0, n, 2_000):
            await vs.upsert(COLLECTION, points(vectors[start : start + 2_000], offset=start))
        await vs.wait_indexed()
        assert isinstance(vs, EdgeVectorStore)
        assert vs._shards[COLLECTION].shard.info().indexed_vectors_count >= 10_000
        broad = SearchFilter(sources=("src0", "src1", "src2"), tags=("u0", "u1"))
        for f in (SearchFilter(), broad, SearchFilter(tags=("t3",)), FILTERS[-1]):
            found = expected = 0
            for i in rng.integers(0, n, 20):
                query = vectors[i] + 0.3 * rng.standard_normal(384) / np.sqrt(384)
                query = (query / np.linalg.norm(query)).astype(np.float32)
                hits = await vs.search(COLLECTION, SearchRequest(query.tolist(), 10, filter=f))
                truth = brute_force(vectors, query, f, 10)
                found += len({h.id for h in hits} & set(truth))
                expected += len(truth)
            assert found / expected >= 0.97, (f, found / expected)
    finally:
        await vs.aclose()


# qdrant-client only ----------------------------------------------------------------------------


def _unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


INSECURE_KEY = "ignore:Api key is used with an insecure connection:UserWarning"


@pytest.mark.filterwarnings(INSECURE_KEY)
async def test_qdrant_down_is_unavailable_quickly() -> None:
    url = f"http://127.0.0.1:{_unused_port()}"
    vs = QdrantVectorStore(url, "secret-api-key-123", timeout=2)
    started = time.perf_counter()
    try:
        with pytest.raises(RetrievalUnavailable) as raised:
            await vs.search(COLLECTION, SearchRequest([0.1] * DIMS))
        with pytest.raises(RetrievalUnavailable):
            await vs.check()
    finally:
        await vs.aclose()
    assert time.perf_counter() - started < 5
    assert url in str(raised.value) and "secret-api-key-123" not in str(raised.value)


@pytest.mark.filterwarnings(INSECURE_KEY)
async def test_qdrant_timeout_is_bounded() -> None:
    """A server that accepts connections but never answers."""
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    vs = QdrantVectorStore(f"http://127.0.0.1:{port}", "k3y", timeout=1)
    started = time.perf_counter()
    try:
        with pytest.raises(RetrievalUnavailable, match=f"127.0.0.1:{port}"):
            await vs.count(COLLECTION)
    finally:
        await vs.aclose()
        server.close()
    assert time.perf_counter() - started < 3


@pytest.mark.opt_in
@pytest.mark.skipif(not QDRANT_URL, reason=NO_QDRANT_SERVER)
async def test_real_server_roundtrip() -> None:
    assert QDRANT_URL
    vs = QdrantVectorStore(QDRANT_URL, os.environ.get("QDRANT_API_KEY"))
    name = f"citadel-test-{uuid.uuid4().hex[:8]}"
    try:
        await vs.check()
        await filled(vs, name)
        assert await vs.count(name) == 300
        hits = await vs.search(name, SearchRequest(VECTORS[1].tolist(), limit=3))
        assert hits[0].id == str(uuid.UUID(int=2))
    finally:
        await vs.aclose()


@pytest.mark.filterwarnings(INSECURE_KEY)
def test_factory_picks_by_url(tmp_path: Path) -> None:
    assert isinstance(open_vector_store(None, None, tmp_path), EdgeVectorStore)
    remote = open_vector_store("http://127.0.0.1:6333", "k", tmp_path)
    assert isinstance(remote, QdrantVectorStore) and remote.kind == "qdrant"
