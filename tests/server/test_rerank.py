"""Reranking through a configured endpoint. No reranker installs offline, so the endpoint is
RerankDouble (tests/doubles/rerank.py), a TEST DOUBLE of a Cohere/Jina-style ``POST /rerank``
that scores a document by the query words it contains; with ``RERANK_URL`` set, the opt-in
test at the end asks that real endpoint. Embedder, vector engine and database are real; the
chat model is the Ollama backend on OllamaDouble (also a test double)."""

from __future__ import annotations

import os

import httpx
import pytest

from tests.conftest import citadel, double_model
from tests.doubles.rerank import rerank_double
from tests.server.test_agui_knowledge import HANDBOOK, ingest


async def test_without_a_reranker_rerank_is_a_clear_501(ollama):
    async with citadel(double_model(ollama)) as url, httpx.AsyncClient(base_url=url) as client:
        proxied = await client.post("/v1/rerank", json={"query": "q", "documents": ["a"]})
        searched = await client.post("/rag/query", json={"query": "roses", "rerank": True})
    for response in (proxied, searched):
        assert response.status_code == 501
        error = response.json()["error"]
        assert error["code"] == "not_implemented" and "CITADEL_RERANK_URL" in error["message"]


async def test_rerank_is_proxied_and_orders_search_hits(ollama):
    async with rerank_double() as (double, rerank_url):
        settings = {"rerank_url": rerank_url, "rerank_model": "house-reranker"}
        async with (
            citadel(double_model(ollama), **settings) as url,
            httpx.AsyncClient(base_url=url) as client,
        ):
            await ingest(url, HANDBOOK)
            proxied = await client.post(
                "/v1/rerank",
                json={"query": "flour water", "documents": ["roses", "flour and water"]},
            )
            bad = await client.post("/v1/rerank", json={"documents": "nope"})
            searched = await client.post(
                "/rag/query", json={"query": "water tomatoes deeply", "rerank": True, "topK": 2}
            )
    assert proxied.status_code == 200
    assert proxied.json()["results"][0] == {"index": 1, "relevance_score": 1.0}
    assert double.requests[0]["model"] == "house-reranker"  # the configured model
    assert bad.status_code == 422
    hits = searched.json()["hits"]
    assert len(hits) == 2 and "tomatoes" in hits[0]["snippet"]
    assert [hit["score"] for hit in hits] == sorted((hit["score"] for hit in hits), reverse=True)
    candidates = double.requests[-1]["documents"]
    assert len(candidates) > 2 and double.requests[-1]["top_n"] == 2  # more candidates, top 2


async def test_a_reranker_that_is_down_is_a_503(ollama, unused_tcp_port):
    settings = {"rerank_url": f"http://127.0.0.1:{unused_tcp_port}/v1", "llm_retries": 0}
    async with citadel(double_model(ollama), **settings) as url, httpx.AsyncClient() as client:
        response = await client.post(f"{url}/v1/rerank", json={"query": "q", "documents": ["a"]})
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "retrieval_unavailable"


@pytest.mark.opt_in
@pytest.mark.skipif(
    not os.environ.get("RERANK_URL"),
    reason="set RERANK_URL (a …/v1 base with /rerank) and RERANK_MODEL to test a real reranker",
)
async def test_a_real_rerank_endpoint(ollama):
    settings = {
        "rerank_url": os.environ["RERANK_URL"],
        "rerank_model": os.environ.get("RERANK_MODEL"),
    }
    async with citadel(double_model(ollama), **settings) as url, httpx.AsyncClient() as client:
        response = await client.post(
            f"{url}/v1/rerank",
            json={
                "query": "How do I water tomatoes?",
                "documents": ["Invoices are due on Friday.", "Water tomatoes deeply twice a week."],
                "top_n": 2,
            },
            timeout=60,
        )
    assert response.status_code == 200, response.text
    assert response.json()["results"][0]["index"] == 1
