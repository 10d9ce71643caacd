"""Vector store on a Qdrant server through qdrant-client's ``AsyncQdrantClient``.

Why it looks the way it does:

- **One Qdrant collection per collection name**, cosine distance, the sparse vector with the
  server's IDF modifier, and a keyword payload index for each of :data:`FILTER_FIELDS`.
- **Hybrid search in one request**: the dense and the sparse nearest as prefetches, fused by
  the server's reciprocal rank fusion.
- **A down server never hangs a request.** Every call runs under :data:`DEFAULT_TIMEOUT` (also
  the client's HTTP timeout), and connection errors and timeouts become
  :class:`RetrievalUnavailable` naming the URL, never the API key. The client's version check
  at construction is off: it would make a blocking request from the event loop.
- **Local mode for tests.** ``location=":memory:"`` runs qdrant-client's pure-Python engine
  (brute force: payload indexes and search parameters have no effect there, so they are not
  sent and their warning is silenced in that mode only).
"""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import httpx
from qdrant_client import AsyncQdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

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
from agent_server.urls import redact_url

DEFAULT_TIMEOUT = 5.0  # seconds for any one call, connecting included
HNSW_EF = 128
HNSW_EF_FILTERED = 256
_UNAVAILABLE = (
    ResponseHandlingException,
    UnexpectedResponse,
    httpx.HTTPError,
    OSError,
    TimeoutError,
)


class QdrantVectorStore:
    """Collections on a Qdrant server (``url``), or in memory (``location=":memory:"``)."""

    kind = "qdrant"

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        location: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        if (url is None) == (location is None):
            raise ValueError("give either a Qdrant url or a local location")
        self.url = url or location or ""
        self._api_key = api_key
        self._local = location is not None
        self._timeout = timeout
        self._sparse: dict[str, bool] = {}  # collection -> has the sparse vector
        self._client = AsyncQdrantClient(
            url=url,
            location=location,
            api_key=api_key,
            timeout=max(1, round(timeout)),
            check_compatibility=False,
        )

    # VectorStore -----------------------------------------------------------------------------

    async def ensure_collection(self, name: str, dimensions: int) -> None:
        async with self._errors():
            if await self._client.collection_exists(name):
                info = await self._client.get_collection(name)
                existing = _dimensions(info.config.params.vectors)
                if existing != dimensions:
                    raise ValueError(
                        f"vector collection {name!r} has {existing} dimensions, not {dimensions}"
                    )
                self._sparse[name] = SPARSE_VECTOR in (info.config.params.sparse_vectors or {})
                return
            await self._client.create_collection(
                name,
                vectors_config=models.VectorParams(
                    size=dimensions, distance=models.Distance.COSINE
                ),
                sparse_vectors_config={
                    SPARSE_VECTOR: models.SparseVectorParams(modifier=models.Modifier.IDF)
                },
            )
            self._sparse[name] = True
            with warnings.catch_warnings():
                if self._local:  # "payload indexes have no effect in the local Qdrant"
                    warnings.simplefilter("ignore", UserWarning)
                for field_name in FILTER_FIELDS:
                    await self._client.create_payload_index(
                        name, field_name, models.PayloadSchemaType.KEYWORD, wait=True
                    )

    async def upsert(self, collection: str, points: Sequence[Point]) -> None:
        if not points:
            return
        sparse = self._sparse.get(collection, False)
        structs = [
            models.PointStruct(id=p.id, vector=_vectors(p, sparse), payload=p.payload)
            for p in points
        ]
        async with self._errors():
            await self._client.upsert(collection, structs, wait=True)

    async def delete_document(self, collection: str, document_id: str) -> int:
        where = qdrant_filter(SearchFilter(document_ids=(document_id,)))
        async with self._errors():
            found = (await self._client.count(collection, count_filter=where, exact=True)).count
            if found:
                await self._client.delete(
                    collection, models.FilterSelector(filter=where), wait=True
                )
        return found

    async def delete_points(self, collection: str, ids: Sequence[str]) -> None:
        if not ids:
            return
        async with self._errors():
            await self._client.delete(collection, models.PointIdsList(points=list(ids)), wait=True)

    async def search(self, collection: str, request: SearchRequest) -> list[Hit]:
        where = qdrant_filter(request.filter)
        dense = [float(x) for x in request.vector]
        hybrid = request.sparse is not None and self._sparse.get(collection, False)
        ef = max(
            HNSW_EF_FILTERED if where else HNSW_EF,
            request.candidates if hybrid else request.limit,
        )
        params = None if self._local else models.SearchParams(hnsw_ef=ef)
        async with self._errors():
            if not hybrid:
                response = await self._client.query_points(
                    collection,
                    query=dense,
                    query_filter=where,
                    limit=request.limit,
                    score_threshold=request.score_threshold,
                    with_payload=True,
                    search_params=params,
                )
            else:
                assert request.sparse is not None
                response = await self._client.query_points(
                    collection,
                    prefetch=[
                        models.Prefetch(
                            query=dense,
                            filter=where,
                            limit=request.candidates,
                            score_threshold=request.score_threshold,
                            params=params,
                        ),
                        models.Prefetch(
                            query=_qdrant_sparse(request.sparse),
                            using=SPARSE_VECTOR,
                            filter=where,
                            limit=request.candidates,
                        ),
                    ],
                    query=models.FusionQuery(fusion=models.Fusion.RRF),
                    limit=request.limit,
                    with_payload=True,
                )
        return [Hit(str(p.id), p.score, dict(p.payload or {})) for p in response.points]

    async def count(self, collection: str, filter: SearchFilter | None = None) -> int:
        async with self._errors():
            result = await self._client.count(
                collection, count_filter=qdrant_filter(filter), exact=True
            )
        return result.count

    async def check(self) -> None:
        async with self._errors():
            await self._client.get_collections()

    async def aclose(self) -> None:
        async with self._errors():
            await self._client.close()

    # Errors ----------------------------------------------------------------------------------

    @asynccontextmanager
    async def _errors(self) -> AsyncIterator[None]:
        """Bound the call and turn transport failures into RetrievalUnavailable."""
        try:
            async with asyncio.timeout(self._timeout):
                yield
        except _UNAVAILABLE as exc:
            reason = str(exc) or type(exc).__name__
            if self._api_key:
                reason = reason.replace(self._api_key, "***")
            raise RetrievalUnavailable(
                f"Qdrant at {redact_url(self.url)} is unavailable: {reason}"
            ) from exc


def qdrant_filter(filter: SearchFilter | None) -> models.Filter | None:
    """Every given field must match one of its values (``tags``: any shared tag)."""
    if not filter:
        return None
    fields = (
        ("source", filter.sources),
        ("document_id", filter.document_ids),
        ("tags", filter.tags),
    )
    return models.Filter(
        must=[
            models.FieldCondition(key=key, match=models.MatchAny(any=list(values)))
            for key, values in fields
            if values
        ]
    )


def _vectors(point: Point, sparse: bool) -> list[float] | dict[str, Any]:
    dense = [float(x) for x in point.vector]
    if point.sparse is None or not sparse:
        return dense
    return {"": dense, SPARSE_VECTOR: _qdrant_sparse(point.sparse)}


def _qdrant_sparse(vector: SparseVector) -> models.SparseVector:
    return models.SparseVector(indices=list(vector.indices), values=list(vector.values))


def _dimensions(vectors: object) -> int | None:
    if isinstance(vectors, models.VectorParams):
        return vectors.size
    if isinstance(vectors, dict) and isinstance(vectors.get(""), models.VectorParams):
        return vectors[""].size
    return None
