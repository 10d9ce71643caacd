"""Liveness, readiness and metrics (the routes anyone may call), and the detailed health."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from starlette.responses import JSONResponse, Response

from agent_server.api.deps import ServicesDep
from agent_server.api.errors import refusals
from agent_server.api.guard import ADMIN, PUBLIC
from agent_server.auth.principals import Principal
from agent_server.checks import check_all
from agent_server.observability.metrics import CONTENT_TYPE

router = APIRouter(tags=["Operations"])


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
    required = {
        name: backend
        for name, backend in services.backends().items()
        if name in ("model", "store", "vectors")
    }
    checks = {
        name: result.json()
        for name, result in (await check_all(required, services.settings)).items()
    }
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
    (administrators only: error messages name hosts). A failing one says how to fix it; the
    checks are those of ``citadel doctor`` (:mod:`agent_server.checks`)."""
    checked = await check_all(services.backends(), services.settings)
    results: dict[str, dict[str, Any]] = {}
    for name, result in checked.items():
        results[name] = result.json()
        if not result.ok:
            services.last_errors[name] = {
                "error": result.error,
                "at": datetime.now(UTC).isoformat(),
            }
        results[name]["lastError"] = services.last_errors.get(name)
    results["model"]["provider"] = services.model.provider
    ok = all(result.ok for result in checked.values())
    return JSONResponse({"status": "ok" if ok else "degraded", "checks": results})


@router.get(
    "/metrics",
    dependencies=[Depends(PUBLIC)],
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE: {"schema": {"type": "string"}}}}},
)
async def metrics(services: ServicesDep) -> Response:
    """Prometheus text format (see :mod:`agent_server.observability.metrics`)."""
    return Response(services.metrics.exposition(), media_type=CONTENT_TYPE)
