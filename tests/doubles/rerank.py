"""RerankDouble: a TEST DOUBLE of a rerank endpoint (Cohere/Jina/TEI style ``POST …/rerank``).

No reranker installs offline (shared/reference/models.md §5), so tests that need one talk to
this small Starlette app on 127.0.0.1. It runs no model: a document's relevance is the share
of the query's words it contains. It answers ``{"results": [{"index", "relevance_score"}]}``,
best first, cut to ``top_n``; every request body is kept in :attr:`RerankDouble.requests`::

    async with rerank_double() as (double, base_url):  # base_url ends in /v1
        settings = {"rerank_url": base_url}
        ...

The real counterpart is tested by ``test_a_real_rerank_endpoint`` in
tests/server/test_rerank.py when ``RERANK_URL`` (and ``RERANK_MODEL``) are set.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.support.servers import serve


class RerankDouble:
    """A TEST DOUBLE of a rerank endpoint: relevance = share of query words in the document."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.app = Starlette(routes=[Route("/v1/rerank", self._rerank, methods=["POST"])])

    async def _rerank(self, request: Request) -> JSONResponse:
        body = await request.json()
        self.requests.append(body)
        words = set(body["query"].lower().split())
        scores = [
            len(words & set(document.lower().split())) / max(len(words), 1)
            for document in body["documents"]
        ]
        order = sorted(range(len(scores)), key=lambda i: -scores[i])[: body.get("top_n")]
        return JSONResponse(
            {"results": [{"index": i, "relevance_score": scores[i]} for i in order]}
        )


@contextlib.asynccontextmanager
async def rerank_double() -> AsyncIterator[tuple[RerankDouble, str]]:
    """The double on a free port of 127.0.0.1, and its base URL (``…/v1``)."""
    double = RerankDouble()
    async with serve(double.app) as url:
        yield double, f"{url}/v1"
