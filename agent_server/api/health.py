"""Liveness, readiness and metrics: the routes anyone may call."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from agent_server.api.http import services_of
from agent_server.models.base import ModelError
from agent_server.observability.metrics import CONTENT_TYPE
from agent_server.store.base import StorageUnavailable

READY_CHECK_TIMEOUT = 5.0


async def health(request: Request) -> Response:
    """The process is alive and serving HTTP; says nothing about dependencies."""
    return JSONResponse({"status": "ok"})


async def ready(request: Request) -> Response:
    """Can this worker serve a run right now? 503 with the reasons when not."""
    services = services_of(request)
    model, store = await asyncio.gather(
        _timed(services.model.check()), _timed(services.store.check())
    )
    model["provider"] = services.model.provider
    checks = {"model": model, "store": store}
    ok = all(check["status"] == "ok" for check in checks.values())
    return JSONResponse(
        {"status": "ready" if ok else "unavailable", "checks": checks}, 200 if ok else 503
    )


async def _timed(check: Awaitable[None]) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        async with asyncio.timeout(READY_CHECK_TIMEOUT):
            await check
        result: dict[str, Any] = {"status": "ok"}
    except (ModelError, StorageUnavailable) as error:
        code = error.code if isinstance(error, ModelError) else "storage_unavailable"
        result = {"status": "error", "code": code, "error": str(error)}
    except TimeoutError:
        result = {"status": "error", "code": "timeout", "error": "no answer within 5 s"}
    result["latencyMs"] = round((time.perf_counter() - started) * 1000, 1)
    return result


async def metrics(request: Request) -> Response:
    """Prometheus text format (see :mod:`agent_server.observability.metrics`)."""
    services = services_of(request)
    return Response(services.metrics.exposition(), media_type=CONTENT_TYPE)


routes = [
    Route("/health", health, methods=["GET"]),
    Route("/ready", ready, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
]
