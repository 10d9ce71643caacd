"""Who may call each route, declared where the route is declared: deny by default.

Every route takes one :class:`Policy` as a dependency (``Depends(RUNS)``, which also hands
the handler the verified :class:`~agent_server.auth.principals.Principal`) or
:data:`PUBLIC`. :func:`declared_policies` collects them, and the :class:`Gate` middleware
checks each request against its route's policy before the route reads anything:

1. an IP that recently sent too many bad credentials is refused (429) before any crypto,
   and slowly: the answer is held for up to :data:`TARPIT_SECONDS` (no CPU is spent
   meanwhile), so a client that floods over a few connections gets a few answers a second
   instead of thousands, and signed-in users keep the event loop. Past
   :data:`TARPIT_PER_IP` held answers for the IP, or :data:`TARPIT_TOTAL` in all (each costs
   a few KB), further requests are answered at once and their connections closed;
2. the credential is verified (:class:`~agent_server.auth.authenticator.Authenticator`); a
   failure is 401 with ``WWW-Authenticate`` and no detail (the reason is logged), and counts
   against the IP;
3. the role: admin routes need an administrator (403, audited); machine credentials need
   the policy's scope (``agents``) unless the route checks scopes itself (knowledge bases);
4. the caller's bucket for the policy's rate class is charged (429 with ``Retry-After``);
5. the body: larger than the policy allows is 413 before it is read; uploads must say their
   length (411); a body sent in chunks is read up to the limit first.

With ``CITADEL_AUTH=off`` every caller is the local user and only step 5 runs. A route
without a policy stops the app from starting.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter
from fastapi.openapi.models import HTTPBearer as HTTPBearerModel
from fastapi.routing import APIRoute, APIWebSocketRoute
from fastapi.security.base import SecurityBase
from starlette.requests import HTTPConnection
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agent_server.api.errors import error_response, merge_refusals, refusals
from agent_server.auth.authenticator import Unauthorized
from agent_server.auth.limits import RateClass
from agent_server.auth.principals import LOCAL_USER, Principal
from agent_server.scopes import AGENTS, allows
from protocol.errors import Refusal

logger = logging.getLogger("citadel.auth")

TARPIT_SECONDS = 1.0
TARPIT_PER_IP = 256
TARPIT_TOTAL = 4096
_MAX_BLOCKED_IPS = 100_000


@dataclass(frozen=True, eq=False)
class Policy(SecurityBase):
    """What a route asks of its callers. As a dependency it is the verified caller."""

    admin: bool = False
    scope: str | None = AGENTS  # what a machine credential needs; None: the route checks
    rate: RateClass = RateClass.REQUESTS
    upload: bool = False  # bodies up to CITADEL_MAX_UPLOAD_BYTES, with a Content-Length

    def __post_init__(self) -> None:
        # What FastAPI puts in the OpenAPI document (the "Authorize" button of /docs).
        description = "A Clerk session token, a Clerk machine token, or a project API key"
        object.__setattr__(self, "model", HTTPBearerModel(description=description))
        object.__setattr__(self, "scheme_name", "bearer")

    async def __call__(self, connection: HTTPConnection) -> Principal:
        # async: FastAPI runs a plain function dependency in a worker thread, per request
        return connection.scope["principal"]

    def refusal_codes(self) -> list[str]:
        codes = ["unauthorized", "rate_limited", "payload_too_large", "invalid_input"]
        if self.admin or self.scope is not None:
            codes.append("forbidden")
        if self.upload:
            codes.append("length_required")
        return codes


class Public:
    """Anyone may call the route (health, readiness, metrics, the API's own documents)."""

    async def __call__(self) -> None:
        return None


PUBLIC = Public()
CALLER = Policy()  # any verified caller; machines need the agents scope
RUNS = Policy(rate=RateClass.RUNS)
ADMIN = Policy(admin=True)
KNOWLEDGE = Policy(scope=None)  # the route checks the knowledge base's own scope
INGEST = Policy(scope=None, rate=RateClass.INGEST, upload=True)
VOICE = Policy(rate=RateClass.VOICE)
TRANSCRIBE = Policy(rate=RateClass.VOICE)  # a recorded turn: within CITADEL_MAX_BODY_BYTES


async def charge(connection: HTTPConnection, principal: Principal, kind: RateClass) -> None:
    """Charge ``kind``'s bucket too, for a request whose class only its body tells (the
    CopilotKit single endpoint's runs); ``rate_limited`` when it is empty."""
    services = connection.app.state.services
    if services.access.authenticator is None:
        return  # as in the Gate: without authentication, no limits
    retry = await _take(services, principal, kind)
    if retry > 0:
        raise Refusal("rate_limited", f"too many {kind}; slow down", retry_after=math.ceil(retry))


async def _take(services: Any, principal: Principal, kind: RateClass) -> float:
    """One request from ``principal``'s ``kind`` bucket: 0, or the seconds until it has one
    (counted as a refusal of that class)."""
    access = services.access
    retry = await access.limiter.take(f"{kind}:{principal.user_id}", access.rates.of(kind))
    if retry > 0:
        services.metrics.rate_limited.labels(kind.value).inc()
    return retry


def declared_policies(routers: Iterable[APIRouter]) -> list[tuple[BaseRoute, Policy | Public]]:
    """Each route of ``routers`` with the policy it declares, in order; its refusals join
    its OpenAPI responses. A route that declares none (or two) is a programming error."""
    table: list[tuple[BaseRoute, Policy | Public]] = []
    for router in routers:
        for route in router.routes:
            if not isinstance(route, APIRoute | APIWebSocketRoute):
                raise RuntimeError(f"{route!r} is not an API route; declare it on a router")
            policy = _policy_of(route)
            if isinstance(route, APIRoute):
                route.responses = merge_refusals(_refusals(route, policy), route.responses)
            table.append((route, policy))
    return table


def _refusals(route: APIRoute, policy: Policy | Public) -> dict[int | str, dict[str, Any]]:
    """What any route under ``policy`` may answer, and any route that takes a body."""
    codes = policy.refusal_codes() if isinstance(policy, Policy) else ["payload_too_large"]
    if route.methods & {"POST", "PUT", "PATCH"}:
        codes += ["invalid_json", "invalid_input", "unsupported_media_type"]
    return refusals(*codes)


def _policy_of(route: APIRoute | APIWebSocketRoute) -> Policy | Public:
    found = [
        dependency.call
        for dependency in route.dependant.dependencies
        if isinstance(dependency.call, Policy | Public)
    ]
    if len(found) != 1:
        raise RuntimeError(f"route {route.path} must declare exactly one Policy or PUBLIC")
    return found[0]


class Gate:
    """ASGI middleware: the checks of this module's docstring, for the route a request is
    for (``policies``, from :func:`declared_policies`). Requests for no route pass on to be
    answered 404 or 405 by the app, and so do static files."""

    def __init__(self, app: ASGIApp, policies: list[tuple[BaseRoute, Policy | Public]]) -> None:
        self.app = app
        self._policies = policies
        self._blocked: dict[str, float] = {}  # IP -> monotonic time its block ends
        self._held: dict[str, int] = {}  # IP -> answers being held back
        self._held_total = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        if _names_nul(scope):
            await _deny(scope, receive, send, "invalid_input", "the URL may not contain %00")
            return
        policy = self._policy(scope)
        if isinstance(policy, Policy):
            principal = await self._admit(scope, receive, send, policy)
            if principal is None:
                return
            scope["principal"] = principal
        if scope["type"] == "http":
            upload = isinstance(policy, Policy) and policy.upload
            bounded = await _bounded_body(scope, receive, send, upload)
            if bounded is None:
                return
            receive = bounded
        await self.app(scope, receive, send)

    def _policy(self, scope: Scope) -> Policy | Public | None:
        for route, policy in self._policies:
            if route.matches(scope)[0] is Match.FULL:
                return policy
        return None

    async def _admit(
        self, scope: Scope, receive: Receive, send: Send, policy: Policy
    ) -> Principal | None:
        """The caller if the policy lets it in; None once it has been refused."""
        services = scope["app"].state.services
        access, metrics = services.access, services.metrics
        if access.authenticator is None:
            return LOCAL_USER
        ip = scope["client"][0] if scope.get("client") else "unknown"
        blocked_until = self._blocked.get(ip)
        if blocked_until is not None:
            wait = blocked_until - time.monotonic()
            if wait > 0:
                metrics.rate_limited.labels("address").inc()
                await self._refuse_blocked(scope, receive, send, ip, wait)
                return None
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
            await _deny(
                scope, receive, send, "unauthorized", message, invalid_token=refused.presented
            )
            return None
        if policy.admin and not principal.admin:
            await access.audit_denied(principal, _method(scope), scope["path"], ip)
            await _deny(scope, receive, send, "forbidden", "this route is for administrators")
            return None
        if principal.admin:
            await access.audit_admin_login(principal, ip)
        if (
            principal.scopes is not None
            and policy.scope is not None
            and not allows(principal.scopes, policy.scope)
        ):
            message = f"this credential lacks the {policy.scope} scope"
            await _deny(scope, receive, send, "forbidden", message)
            return None
        kind = policy.rate
        if scope["type"] == "websocket" and kind is RateClass.REQUESTS:
            kind = RateClass.RUNS  # a socket is a stream: counted as one
        retry = await _take(services, principal, kind)
        if retry > 0:
            await _deny(scope, receive, send, "rate_limited", f"too many {kind}; slow down", retry)
            return None
        return principal

    async def _refuse_blocked(
        self, scope: Scope, receive: Receive, send: Send, ip: str, wait: float
    ) -> None:
        held = self._held.get(ip, 0)
        if held >= TARPIT_PER_IP or self._held_total >= TARPIT_TOTAL:
            await _deny(scope, receive, send, "rate_limited", "too many requests", wait, close=True)
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
        await _deny(scope, receive, send, "rate_limited", "too many requests", wait)

    def _block(self, ip: str, seconds: float) -> None:
        if len(self._blocked) >= _MAX_BLOCKED_IPS:
            now = time.monotonic()
            self._blocked = {k: v for k, v in self._blocked.items() if v > now}
        self._blocked[ip] = time.monotonic() + seconds


async def _bounded_body(scope: Scope, receive: Receive, send: Send, upload: bool) -> Receive | None:
    """``receive`` for a body within the limit; None once a larger one has been refused."""
    settings = scope["app"].state.services.settings
    limit = settings.max_upload_bytes if upload else settings.max_body_bytes
    headers = dict(scope["headers"])
    declared = headers.get(b"content-length")
    too_large = f"the body exceeds {limit} bytes"
    if declared is not None:
        if not declared.isdigit():
            await _refuse(scope, receive, send, "invalid_input", "Content-Length is not a number")
            return None
        if int(declared) > limit:
            await _refuse(scope, receive, send, "payload_too_large", too_large)
            return None
        return receive
    if b"transfer-encoding" not in headers:
        return receive  # no body
    if upload:
        await _refuse(scope, receive, send, "length_required", "send uploads with a Content-Length")
        return None
    messages: list[Message] = []
    size = 0
    while True:
        message = await receive()
        messages.append(message)
        size += len(message.get("body", b""))
        if size > limit:
            await _refuse(scope, receive, send, "payload_too_large", too_large)
            return None
        if message["type"] != "http.request" or not message.get("more_body", False):
            break

    async def replay() -> Message:
        return messages.pop(0) if messages else await receive()

    return replay


def _names_nul(scope: Scope) -> bool:
    """A NUL in the path or the query string: no store could keep what it names."""
    return "\x00" in scope["path"] or b"%00" in scope.get("query_string", b"")


def _method(scope: Scope) -> str:
    return scope.get("method", "WEBSOCKET")


async def _refuse(scope: Scope, receive: Receive, send: Send, code: str, message: str) -> None:
    await error_response(code, message)(scope, receive, send)


async def _deny(
    scope: Scope,
    receive: Receive,
    send: Send,
    code: str,
    message: str,
    retry_after: float | None = None,
    *,
    invalid_token: bool = False,
    close: bool = False,
) -> None:
    """The API's JSON error; for a WebSocket, the same as its handshake's HTTP answer when
    the server supports it, else a close before accepting."""
    headers = {}
    if code == "unauthorized":
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
    await error_response(code, message, headers)(scope, receive, send)
