"""``GET /health/detailed``: every configured dependency with its latency and its last error,
for administrators. Real Postgres, Redis, embedder and vector engine; the chat model is the
Ollama backend on OllamaDouble and the reranker RerankDouble (TEST DOUBLES: no Ollama server
or reranker runs here)."""

from __future__ import annotations

import httpx

from tests.conftest import citadel, double_model
from tests.doubles.rerank import rerank_double
from tests.support.clerk import admin_token, bearer, clerk_settings, session_token
from tests.support.redis import SHARED_DB, redis_url


async def test_every_dependency_is_checked_and_a_failure_is_remembered(ollama, unused_tcp_port):
    async with (
        citadel(double_model(ollama), redis_url=redis_url(SHARED_DB)) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as client,
    ):
        healthy = (await client.get("/health/detailed")).json()
        await ollama.__aexit__(None, None, None)  # the model backend goes away
        down = (await client.get("/health/detailed")).json()
    assert healthy["status"] == "ok"
    assert set(healthy["checks"]) == {"model", "store", "embedder", "vectors", "redis"}
    assert all(c["status"] == "ok" and c["lastError"] is None for c in healthy["checks"].values())
    assert all(c["latencyMs"] >= 0 for c in healthy["checks"].values())
    assert down["status"] == "degraded"
    model = down["checks"]["model"]
    assert model["status"] == "error" and model["code"] == "model_unavailable"
    assert model["lastError"]["error"] == model["error"] and model["lastError"]["at"]
    assert down["checks"]["store"]["status"] == "ok"


async def test_a_redis_that_is_down_is_reported_with_its_fix_not_raised(ollama, unused_tcp_port):
    async with (
        citadel(double_model(ollama), redis_url=f"redis://127.0.0.1:{unused_tcp_port}/0") as url,
        httpx.AsyncClient(base_url=url, timeout=30) as client,
    ):
        response = await client.get("/health/detailed")
    redis = response.json()["checks"]["redis"]
    assert response.status_code == 200 and response.json()["status"] == "degraded"
    assert redis["status"] == "error" and redis["code"] == "redis_unavailable"
    assert "start Redis at REDIS_URL" in redis["fix"]  # the fix citadel doctor gives


async def test_a_configured_reranker_is_checked_up_and_down(ollama, unused_tcp_port):
    async with (
        rerank_double() as (double, rerank_url),
        citadel(double_model(ollama), rerank_url=rerank_url) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as client,
    ):
        up = (await client.get("/health/detailed")).json()["checks"]["reranker"]
    down_url = f"http://127.0.0.1:{unused_tcp_port}/v1"
    async with (
        citadel(double_model(ollama), rerank_url=down_url, llm_retries=0) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as client,
    ):
        response = await client.get("/health/detailed")
    assert up["status"] == "ok" and up["lastError"] is None and len(double.requests) == 1
    down = response.json()["checks"]["reranker"]
    assert response.json()["status"] == "degraded"
    assert down["status"] == "error" and down["code"] == "retrieval_unavailable"
    assert f"127.0.0.1:{unused_tcp_port}" in down["error"] and "CITADEL_RERANK_URL" in down["fix"]


async def test_the_detailed_health_is_for_administrators(ollama):
    async with (
        citadel(double_model(ollama), **clerk_settings()) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as client,
    ):
        anonymous = await client.get("/health/detailed")
        user = await client.get("/health/detailed", headers=bearer(session_token()))
        admin = await client.get("/health/detailed", headers=bearer(admin_token()))
    assert anonymous.status_code == 401
    assert user.status_code == 403 and user.json()["error"]["code"] == "forbidden"
    assert admin.status_code == 200 and "model" in admin.json()["checks"]


async def test_ready_needs_the_model_the_store_and_the_vector_store(ollama, unused_tcp_port):
    async with (
        citadel(double_model(ollama)) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as client,
    ):
        ready = await client.get("/ready")
    assert ready.status_code == 200
    assert set(ready.json()["checks"]) == {"model", "store", "vectors"}
    qdrant_down = {"qdrant_url": f"http://127.0.0.1:{unused_tcp_port}"}
    async with (
        citadel(double_model(ollama), **qdrant_down) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as client,
    ):
        not_ready = await client.get("/ready")
        health = await client.get("/health")
    assert not_ready.status_code == 503 and health.status_code == 200
    vectors = not_ready.json()["checks"]["vectors"]
    assert vectors["status"] == "error" and vectors["code"] == "retrieval_unavailable"
    assert not_ready.json()["checks"]["model"]["status"] == "ok"
