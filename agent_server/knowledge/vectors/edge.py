"""Vector store on the Qdrant engine in this process (qdrant-edge): the embedded default.

Why it looks the way it does:

- **One shard per collection**, under ``<data_dir>/qdrant/<collection>/``: qdrant-edge has no
  collections, an ``EdgeShard`` is one dataset. Its dimensions live in the shard's
  ``edge_config.json``, which :meth:`EdgeVectorStore.ensure_collection` checks on reopen.
- **One worker thread owns the shards.** Every engine call runs, in arrival order, on a
  single-thread executor of this store, so the event loop never waits on the engine and no
  two engine calls race (edge gives no thread-safety promise).
- **The engine holds the GIL.** Measured on 0.9.0: ``update``, ``flush`` and ``optimize`` keep
  the GIL for their whole duration (a 2.1 s ``optimize`` froze every Python thread for 2.1 s);
  only searches are short. Running ``optimize`` concurrently with searches therefore buys
  nothing in-process, so the worker serialises them and the store bounds the *length* of each
  ``optimize`` instead (next point).
- **The HNSW index is built in the background, in small steps.** Edge has no background
  optimizer. After upserts leave :data:`INDEX_THRESHOLD` or more un-indexed points the store
  queues one ``optimize()`` on the worker. The shard's ``indexing_threshold`` is the same size
  and segments are capped at :data:`MAX_SEGMENT_POINTS`, so each ``optimize`` indexes about one
  step of new points into a bounded segment: ~0.3-0.4 s on 2 cores (measured; an uncapped
  segment grew to ~2.5 s per step at 100k points). Searches queued meanwhile wait for it and
  stay exact: un-indexed points live in a plain segment that is scanned in full.
- **Hybrid search in one engine call**: a query with the dense and the sparse nearest as
  prefetches, fused by reciprocal rank (``k`` = :data:`RRF_K`, Qdrant's default).
- **Search parameters.** ``hnsw_ef`` 128 unfiltered, 256 filtered: on clustered 384-d vectors
  (100k points) recall@10 was 1.0 unfiltered and >= 0.99 filtered at 1-3 ms. Selective filters
  (fewer matches than the HNSW ``full_scan_threshold``) are answered exactly by Qdrant's query
  planner from the keyword payload indexes. Below the indexing threshold every search is exact.
- **One process per shard.** Edge locks the shard's WAL: a second ``EdgeShard.load`` of the
  same directory, in this process or another, fails at once; it is reported as
  :class:`RetrievalUnavailable` saying the directory is in use.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import qdrant_edge as qe

from agent_server.knowledge.errors import RetrievalUnavailable
from agent_server.knowledge.vectors.base import (
    FILTER_FIELDS,
    SPARSE_VECTOR,
    Hit,
    Point,
    SearchFilter,
    SearchRequest,
    SparseVector,
)

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

INDEX_THRESHOLD = 2_000  # un-indexed points that trigger a background optimize() (~0.35 s)
MAX_SEGMENT_POINTS = 20_000  # bounds the segment an optimize() rebuilds
HNSW_EF = 128
HNSW_EF_FILTERED = 256
RRF_K = 2
_UPSERT_BATCH = 512  # points per engine call: each call holds the GIL (~5 ms per 512)
_CONFIG_FILE = "edge_config.json"


@dataclass(slots=True)
class _Shard:
    shard: qe.EdgeShard
    dimensions: int
    sparse: bool  # has the sparse vector (collections made before hybrid search do not)
    unindexed: int  # points written since the last optimize(), an upper bound
    optimize_queued: bool = False


class EdgeVectorStore:
    """Collections as qdrant-edge shards under ``<data_dir>/qdrant/``."""

    kind = "embedded"

    def __init__(self, data_dir: Path, *, index_threshold: int = INDEX_THRESHOLD) -> None:
        self.root = Path(data_dir) / "qdrant"
        self._index_threshold = index_threshold
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qdrant-edge")
        self._shards: dict[str, _Shard] = {}  # touched only on the worker thread
        self._closing = False

    # VectorStore -----------------------------------------------------------------------------

    async def ensure_collection(self, name: str, dimensions: int) -> None:
        await self._run(self._ensure, name, dimensions)

    async def upsert(self, collection: str, points: Sequence[Point]) -> None:
        if points:
            await self._run(self._upsert, collection, points)

    async def delete_document(self, collection: str, document_id: str) -> int:
        return await self._run(self._delete_document, collection, document_id)

    async def delete_points(self, collection: str, ids: Sequence[str]) -> None:
        if ids:
            op = qe.UpdateOperation.delete_points(list(ids))
            await self._run(lambda: self._open(collection).shard.update(op))

    async def search(self, collection: str, request: SearchRequest) -> list[Hit]:
        return await self._run(self._search, collection, request)

    async def count(self, collection: str, filter: SearchFilter | None = None) -> int:
        query = qe.CountRequest(exact=True, filter=edge_filter(filter))
        return await self._run(lambda: self._open(collection).shard.count(query))

    async def check(self) -> None:
        """The worker answers and the collections' folder can be written."""
        await self._run(self._check_root)

    async def aclose(self) -> None:
        """Flush and close every shard after queued work; a queued optimize is skipped."""
        self._closing = True
        with contextlib.suppress(RetrievalUnavailable):  # closed already
            await self._run(self._close_all)
            self._executor.shutdown()

    async def wait_indexed(self) -> None:
        """Wait until queued background indexing has run (for tests and benchmarks)."""
        await self._run(lambda: None)

    # Event loop side -------------------------------------------------------------------------

    async def _run(self, fn: Callable[..., _T], *args: Any) -> _T:
        return await asyncio.wrap_future(self._submit(fn, *args))

    def _submit(self, fn: Callable[..., _T], *args: Any) -> Future[_T]:
        try:
            return self._executor.submit(_engine_errors, fn, *args)
        except RuntimeError as exc:  # the executor is shut down
            raise RetrievalUnavailable("the embedded vector store is closed") from exc

    # Worker thread ---------------------------------------------------------------------------

    def _check_root(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)  # OSError: RetrievalUnavailable
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise RetrievalUnavailable(f"embedded vector store: {self.root} is not writable")

    def _ensure(self, name: str, dimensions: int) -> None:
        path = self.root / name
        if name not in self._shards and not (path / _CONFIG_FILE).exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            shard = qe.EdgeShard.create(str(path), _config(dimensions, self._index_threshold))
            for field_name in FILTER_FIELDS:
                op = qe.UpdateOperation.create_field_index(field_name, qe.PayloadSchemaType.Keyword)
                shard.update(op)
            self._shards[name] = _Shard(shard, dimensions, sparse=True, unindexed=0)
            return
        existing = self._open(name).dimensions
        if existing != dimensions:
            raise ValueError(
                f"vector collection {name!r} has {existing} dimensions, not {dimensions}"
            )

    def _open(self, name: str) -> _Shard:
        """The shard of ``name``, loaded from disk on first use."""
        if (entry := self._shards.get(name)) is not None:
            return entry
        path = self.root / name
        if not (path / _CONFIG_FILE).exists():
            raise RetrievalUnavailable(f"vector collection {name!r} does not exist")
        config = json.loads((path / _CONFIG_FILE).read_text())
        dimensions = int(config["vectors"][""]["size"])
        sparse = SPARSE_VECTOR in (config.get("sparse_vectors") or {})
        try:
            shard = qe.EdgeShard.load(
                str(path), _config(dimensions, self._index_threshold, sparse=sparse)
            )
        except Exception as exc:
            if "WouldBlock" in str(exc):
                raise RetrievalUnavailable(
                    f"the vector store {path} is in use by another process "
                    "(qdrant-edge allows one process per directory)"
                ) from exc
            raise
        info = shard.info()
        unindexed = max(0, info.points_count - info.indexed_vectors_count)
        entry = self._shards[name] = _Shard(shard, dimensions, sparse, unindexed)
        self._maybe_queue_optimize(name, entry)
        return entry

    def _upsert(self, name: str, points: Sequence[Point]) -> None:
        entry = self._open(name)
        for start in range(0, len(points), _UPSERT_BATCH):
            batch = points[start : start + _UPSERT_BATCH]
            for point in batch:
                if len(point.vector) != entry.dimensions:
                    raise ValueError(
                        f"vector collection {name!r} has {entry.dimensions} dimensions, "
                        f"a point has {len(point.vector)}"
                    )
            entry.shard.update(
                qe.UpdateOperation.upsert_points(
                    [qe.Point(p.id, _vectors(p, entry.sparse), p.payload) for p in batch]
                )
            )
        entry.unindexed += len(points)
        self._maybe_queue_optimize(name, entry)

    def _maybe_queue_optimize(self, name: str, entry: _Shard) -> None:
        if entry.unindexed >= self._index_threshold and not entry.optimize_queued:
            entry.optimize_queued = True
            self._executor.submit(self._optimize, name, entry)

    def _optimize(self, name: str, entry: _Shard) -> None:
        entry.optimize_queued = False
        if self._closing or self._shards.get(name) is not entry:
            return
        started = time.perf_counter()
        try:
            entry.shard.optimize()
        except Exception:
            logger.exception("indexing vector collection %r failed", name)
            return
        entry.unindexed = 0
        logger.debug("indexed %r in %.2f s", name, time.perf_counter() - started)

    def _delete_document(self, name: str, document_id: str) -> int:
        shard = self._open(name).shard
        where = edge_filter(SearchFilter(document_ids=(document_id,)))
        found = shard.count(qe.CountRequest(exact=True, filter=where))
        if found and where is not None:
            shard.update(qe.UpdateOperation.delete_points_by_filter(where))
        return found

    def _search(self, name: str, request: SearchRequest) -> list[Hit]:
        entry = self._open(name)
        where = edge_filter(request.filter)
        dense = qe.Query.Nearest([float(x) for x in request.vector])
        if request.sparse is None or not entry.sparse:
            ef = max(HNSW_EF_FILTERED if where else HNSW_EF, request.limit)
            query = qe.QueryRequest(
                limit=request.limit,
                query=dense,
                filter=where,
                score_threshold=request.score_threshold,
                with_payload=True,
                params=qe.SearchParams(hnsw_ef=ef),
            )
        else:
            ef = max(HNSW_EF_FILTERED if where else HNSW_EF, request.candidates)
            terms = qe.Query.Nearest(_edge_sparse(request.sparse), using=SPARSE_VECTOR)
            query = qe.QueryRequest(
                limit=request.limit,
                prefetches=[
                    qe.Prefetch(
                        request.candidates,
                        query=dense,
                        filter=where,
                        score_threshold=request.score_threshold,
                        params=qe.SearchParams(hnsw_ef=ef),
                    ),
                    qe.Prefetch(request.candidates, query=terms, filter=where),
                ],
                query=qe.Fusion.Rrf(RRF_K),
                with_payload=True,
            )
        found = entry.shard.query(query)
        return [Hit(str(p.id), p.score, dict(p.payload or {})) for p in found]

    def _close_all(self) -> None:
        shards, self._shards = self._shards, {}
        for entry in shards.values():
            entry.shard.flush()
            entry.shard.close()


def edge_filter(filter: SearchFilter | None) -> qe.Filter | None:
    """Every given field must match one of its values (``tags``: any shared tag)."""
    if not filter:
        return None
    conditions: list[Any] = [
        qe.FieldCondition(key=key, match=qe.MatchAny(list(values)))
        for key, values in _filter_fields(filter)
        if values
    ]
    return qe.Filter(must=conditions)


def _filter_fields(filter: SearchFilter) -> tuple[tuple[str, tuple[str, ...]], ...]:
    return (
        ("source", filter.sources),
        ("document_id", filter.document_ids),
        ("tags", filter.tags),
    )


def _vectors(point: Point, sparse: bool) -> list[float] | dict[str, Any]:
    dense = [float(x) for x in point.vector]
    if point.sparse is None or not sparse:
        return dense
    return {"": dense, SPARSE_VECTOR: _edge_sparse(point.sparse)}


def _edge_sparse(vector: SparseVector) -> qe.SparseVector:
    return qe.SparseVector(list(vector.indices), [float(x) for x in vector.values])


def _config(dimensions: int, index_threshold: int, *, sparse: bool = True) -> qe.EdgeConfig:
    kb_per_point = dimensions * 4 / 1024
    sparse_vectors = {SPARSE_VECTOR: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)}
    return qe.EdgeConfig(
        vectors=qe.EdgeVectorParams(size=dimensions, distance=qe.Distance.Cosine),
        sparse_vectors=sparse_vectors if sparse else None,
        optimizers=qe.EdgeOptimizersConfig(
            indexing_threshold=max(1, int(index_threshold * kb_per_point)),
            max_segment_size=max(1, int(MAX_SEGMENT_POINTS * kb_per_point)),
        ),
    )


def _engine_errors(fn: Callable[..., _T], *args: Any) -> _T:
    """Engine failures (plain ``Exception`` from the Rust side) -> RetrievalUnavailable."""
    try:
        return fn(*args)
    except (RetrievalUnavailable, ValueError):
        raise
    except Exception as exc:
        raise RetrievalUnavailable(f"embedded vector store: {exc}") from exc
