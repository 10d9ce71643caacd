"""Liveness and readiness."""

from __future__ import annotations

import asyncio
import time

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from agent_server.models.base import ModelError

READY_CHECK_TIMEOUT = 5.0


async def health(request: Request) -> Response:
    """The process is alive and serving HTTP; says nothing about dependencies."""
    return JSONResponse({"status": "ok"})


async def ready(request: Request) -> Response:
    """Can this worker serve a run right now? 503 with the reason when not."""
    model = request.app.state.services.model
    started = time.perf_counter()
    try:
        async with asyncio.timeout(READY_CHECK_TIMEOUT):
            await model.check()
        check = {"status": "ok"}
    except ModelError as error:
        check = {"status": "error", "code": error.code, "error": str(error)}
    except TimeoutError:
        check = {"status": "error", "code": "timeout", "error": "no answer within 5 s"}
    check["provider"] = model.provider
    check["latencyMs"] = round((time.perf_counter() - started) * 1000, 1)
    ok = check["status"] == "ok"
    return JSONResponse(
        {"status": "ready" if ok else "unavailable", "checks": {"model": check}},
        200 if ok else 503,
    )


routes = [Route("/health", health, methods=["GET"]), Route("/ready", ready, methods=["GET"])]
