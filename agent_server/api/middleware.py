"""The ASGI middleware every request passes: its id, and its count in the metrics."""

from __future__ import annotations

import re
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agent_server.observability.logs import REQUEST_ID_HEADER, bind_request, unbind_request
from agent_server.observability.metrics import Metrics

_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


class RequestIdMiddleware:
    """Binds an id to every HTTP request and WebSocket session and answers with it in
    ``X-Request-ID``: the client's own when it sent a sane one (up to 128 of
    ``A-Za-z0-9._:-``), else a new one, so a caller can always quote it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        request_id = _given_id(scope) or uuid.uuid4().hex
        header = (REQUEST_ID_HEADER.lower().encode(), request_id.encode())

        async def sending(message: Message) -> None:
            if message["type"] in ("http.response.start", "websocket.accept"):
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        token = bind_request(request_id)
        await self.app(scope, receive, sending)
        # Left bound when the app raises: the server's line about the error names the request.
        unbind_request(token)


def _given_id(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            given = value.decode("latin-1")
            return given if _SANE_REQUEST_ID.fullmatch(given) else None
    return None


class MetricsMiddleware:
    """Counts every HTTP answer and WebSocket session by its route template and status."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500 if scope["type"] == "http" else 101

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] in ("http.response.start", "websocket.http.response.start"):
                status = message["status"]
            elif message["type"] == "websocket.close" and status == 101:
                status = 403  # closed before it was accepted
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            services = getattr(scope["app"].state, "services", None)
            if services is not None:
                route = scope.get("route")
                template = route.path if route is not None else "unmatched"
                method = scope.get("method", "WEBSOCKET")
                metrics: Metrics = services.metrics
                metrics.requests.labels(method, template, str(status)).inc()
                elapsed = time.perf_counter() - started
                metrics.request_seconds.labels(method, template).observe(elapsed)
