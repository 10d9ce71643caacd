"""Liveness, readiness and metrics (the routes anyone may call), and the detailed health."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from redis.exceptions import RedisError
from starlette.responses import JSONResponse, Response

from agent_server.api.deps import ServicesDep
from agent_server.api.errors import refusals
from agent_server.api.guard import ADMIN, PUBLIC
from agent_server.auth.principals import Principal
from agent_server.backends.errors import BackendError
from agent_server.knowledge.errors import RetrievalUnavailable
from agent_server.observability.metrics import CONTENT_TYPE
from agent_server.store.base import StorageUnavailable

router = APIRouter(tags=["Operations"])
READY_CHECK_TIMEOUT = 5.0


@router.get("/health", dependencies=[Depends(PUBLIC)])
async def health() -> dict[str, str]:
    """The process is alive and serving HTTP; says nothing about dependencies."""
    return {"status": "ok"}


@router.get(
    "/ready",
    dependencies=[Depends(PUBLIC)],
    responses={503: {"description": "Not ready: the checks say why"}},
)
async def ready(services: ServicesDep) -> Response:
    """Can this worker serve a run right now (the model, the database, and the vector store
    when retrieval is on)? 503 with the reasons when not. The embedder and Redis are not
    required: without them retrieval fails its tool calls and caches degrade, runs go on."""
    required: dict[str, Awaitable[Any]] = {
        "model": services.model.check(),
        "store": services.store.check(),
    }
    if services.knowledge is not None:
        required["vectors"] = services.knowledge.vectors.check()
    results = await asyncio.gather(*(_timed(check) for check in required.values()))
    checks = dict(zip(required, results, strict=True))
    checks["model"]["provider"] = services.model.provider
    ok = all(check["status"] == "ok" for check in checks.values())
    return JSONResponse(
        {"status": "ready" if ok else "unavailable", "checks": checks}, 200 if ok else 503
    )


@router.get("/health/detailed", responses=refusals("forbidden"))
async def detailed(
    services: ServicesDep, principal: Annotated[Principal, Depends(ADMIN)]
) -> Response:
    """Every configured dependency with its latency, and the last error each one gave
    (administrators only: error messages name hosts)."""
    checks: dict[str, Awaitable[Any]] = {
        "model": services.model.check(),
        "store": services.store.check(),
    }
    if services.knowledge is not None:
        checks["embedder"] = services.knowledge.embedder.check()
        checks["vectors"] = services.knowledge.vectors.check()
    if services.redis_client is not None:
        checks["redis"] = services.redis_client.ping()
    results = dict(
        zip(checks, await asyncio.gather(*(_timed(c) for c in checks.values())), strict=True)
    )
    for name, result in results.items():
        if result["status"] != "ok":
            services.last_errors[name] = {
                "error": result["error"],
                "at": datetime.now(UTC).isoformat(),
            }
        result["lastError"] = services.last_errors.get(name)
    results["model"]["provider"] = services.model.provider
    ok = all(result["status"] == "ok" for result in results.values())
    return JSONResponse({"status": "ok" if ok else "degraded", "checks": results})


async def _timed(check: Awaitable[Any]) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        async with asyncio.timeout(READY_CHECK_TIMEOUT):
            await check
        result: dict[str, Any] = {"status": "ok"}
    except (BackendError, StorageUnavailable, RetrievalUnavailable, RedisError) as error:
        result = {"status": "error", "code": _code(error), "error": str(error)}
    except TimeoutError:
        result = {"status": "error", "code": "timeout", "error": "no answer within 5 s"}
    result["latencyMs"] = round((time.perf_counter() - started) * 1000, 1)
    return result


def _code(error: Exception) -> str:
    if isinstance(error, BackendError | RetrievalUnavailable):
        return error.code
    return "storage_unavailable" if isinstance(error, StorageUnavailable) else "redis_unavailable"


@router.get(
    "/metrics",
    dependencies=[Depends(PUBLIC)],
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE: {"schema": {"type": "string"}}}}},
)
async def metrics(services: ServicesDep) -> Response:
    """Prometheus text format (see :mod:`agent_server.observability.metrics`)."""
    return Response(services.metrics.exposition(), media_type=CONTENT_TYPE)
