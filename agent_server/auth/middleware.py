"""Every request is authenticated here, before any route runs: deny by default.

Only :data:`PUBLIC_PATHS` answer without credentials. For the rest, in order:

1. an IP that recently sent too many bad credentials is refused (429) before any crypto, and
   slowly: the answer is held for up to :data:`TARPIT_SECONDS` (no CPU is spent meanwhile), so
   a client that floods over a few connections gets a few answers a second instead of
   thousands, and signed-in users keep the event loop. Past :data:`TARPIT_PER_IP` held
   answers for the IP, or :data:`TARPIT_TOTAL` in all (each costs a few KB), further requests
   are answered at once and their connections closed;
2. the credential is verified (:class:`~agent_server.auth.authenticator.Authenticator`);
   a failure is 401 with ``WWW-Authenticate`` and no detail (the reason is logged), and
   counts against the IP;
3. admin routes need an admin (403 otherwise, audited); machine credentials need the
   ``agents`` scope outside ``/rag`` (where each knowledge base's scope is checked by the
   route, which knows the base);
4. the principal's bucket for the route's class (runs, ingestion, other requests) is charged
   (429 with ``Retry-After`` when empty).

The verified principal is put in the ASGI scope, where
:func:`~agent_server.auth.principals.principal_of` finds it. With ``CITADEL_AUTH=off`` every
request is the local user and nothing else here runs.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from enum import StrEnum

from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send

from agent_server.api.http import error_response
from agent_server.auth.authenticator import Unauthorized
from agent_server.auth.principals import LOCAL_USER
from agent_server.auth.scopes import allows

logger = logging.getLogger("citadel.auth")

PUBLIC_PATHS = frozenset({"/health", "/ready", "/metrics"})
ADMIN_PREFIX = "/admin"
TARPIT_SECONDS = 1.0
TARPIT_PER_IP = 256
TARPIT_TOTAL = 4096
_MAX_BLOCKED_IPS = 100_000


class RouteClass(StrEnum):
    RUNS = "runs"
    INGEST = "ingest"
    REQUESTS = "requests"


def route_class(scope: Scope) -> RouteClass:
    path = scope["path"]
    if scope["type"] == "websocket" or (scope["method"] == "POST" and path == "/agui"):
        return RouteClass.RUNS
    if scope["method"] == "POST" and path == "/rag/ingest":
        return RouteClass.INGEST
    return RouteClass.REQUESTS


class AuthMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._blocked: dict[str, float] = {}  # IP -> monotonic time its block ends
        self._held: dict[str, int] = {}  # IP -> answers being held back
        self._held_total = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope["path"] in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        services = scope["app"].state.services
        access, metrics = services.access, services.metrics
        if access.authenticator is None:
            scope["principal"] = LOCAL_USER
            await self.app(scope, receive, send)
            return
        ip = scope["client"][0] if scope.get("client") else "unknown"
        blocked_until = self._blocked.get(ip)
        if blocked_until is not None:
            wait = blocked_until - time.monotonic()
            if wait > 0:
                metrics.rate_limited.labels("address").inc()
                await self._refuse_blocked(scope, receive, send, ip, wait)
                return
            del self._blocked[ip]
        try:
            principal = await access.authenticator.authenticate(HTTPConnection(scope))
        except Unauthorized as refused:
            logger.info(
                "unauthorized %s %s from %s: %s", _method(scope), scope["path"], ip, refused.reason
            )
            metrics.auth_refusals.labels(refused.reason).inc()
            retry = await access.limiter.take(f"authfail:{ip}", access.rates.auth_failures)
            if retry > 0:
                self._block(ip, retry)
            message = "a valid credential is required"
            invalid = refused.presented
            await _deny(scope, receive, send, 401, "unauthorized", message, invalid_token=invalid)
            return
        if scope["path"].startswith(ADMIN_PREFIX) and not principal.admin:
            await access.audit_denied(principal, scope, ip)
            message = "this route is for administrators"
            await _deny(scope, receive, send, 403, "forbidden", message)
            return
        if principal.admin:
            await access.audit_admin_login(principal, ip)
        if (
            principal.scopes is not None
            and not scope["path"].startswith("/rag/")
            and not allows(principal.scopes, "agents")
        ):
            message = "this credential lacks the agents scope"
            await _deny(scope, receive, send, 403, "forbidden", message)
            return
        kind = route_class(scope)
        retry = await access.limiter.take(f"{kind}:{principal.user_id}", access.rates.of(kind))
        if retry > 0:
            metrics.rate_limited.labels(kind.value).inc()
            message = f"too many {kind}; slow down"
            await _deny(scope, receive, send, 429, "rate_limited", message, retry)
            return
        scope["principal"] = principal
        await self.app(scope, receive, send)

    async def _refuse_blocked(
        self, scope: Scope, receive: Receive, send: Send, ip: str, wait: float
    ) -> None:
        held = self._held.get(ip, 0)
        if held >= TARPIT_PER_IP or self._held_total >= TARPIT_TOTAL:
            await _deny(scope, receive, send, 429, "rate_limited", "too many requests", wait,
                        close=True)  # fmt: skip
            return
        self._held[ip] = held + 1
        self._held_total += 1
        try:
            # Jittered, so that the flood's connections come back spread out, not in a burst.
            await asyncio.sleep(min(wait, TARPIT_SECONDS) * random.uniform(0.5, 1.5))
        finally:
            self._held_total -= 1
            if self._held[ip] == 1:
                del self._held[ip]
            else:
                self._held[ip] -= 1
        await _deny(scope, receive, send, 429, "rate_limited", "too many requests", wait)

    def _block(self, ip: str, seconds: float) -> None:
        if len(self._blocked) >= _MAX_BLOCKED_IPS:
            now = time.monotonic()
            self._blocked = {k: v for k, v in self._blocked.items() if v > now}
        self._blocked[ip] = time.monotonic() + seconds


def _method(scope: Scope) -> str:
    return scope.get("method", "WEBSOCKET")


async def _deny(
    scope: Scope,
    receive: Receive,
    send: Send,
    status: int,
    code: str,
    message: str,
    retry_after: float | None = None,
    *,
    invalid_token: bool = False,
    close: bool = False,
) -> None:
    """The API's JSON error (:func:`~agent_server.api.http.error_response`); for a WebSocket,
    the same as its handshake's HTTP answer when the server supports it, else a close before
    accepting."""
    headers = {}
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="citadel"' + (
            ', error="invalid_token"' if invalid_token else ""
        )
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    if close:
        headers["Connection"] = "close"
    if scope["type"] == "websocket":
        await receive()  # websocket.connect: the handshake must be read before it is answered
        if "websocket.http.response" not in scope.get("extensions", {}):
            await send({"type": "websocket.close", "code": 1008})
            return
    await error_response(status, code, message, headers)(scope, receive, send)
