"""Opaque Clerk machine tokens checked with Clerk's Backend API. No Clerk runs here: the API is
ClerkBackendDouble, a TEST DOUBLE on 127.0.0.1 answering ``POST /v1/m2m_tokens/verify`` as
Clerk documents it. With CLERK_SECRET_KEY and CLERK_TEST_M2M_TOKEN set, the opt-in test at the
end asks the real Clerk."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from agent_server.auth.opaque import MachineTokenRefused, OpaqueMachineVerifier
from tests.auth.support import NOW, FakeClock
from tests.support.servers import serve

SECRET = "sk_test_backend"
OURS = "mch_ours"
CLIENT_TIMEOUT = 0.5  # the verifier's HTTP client's


class ClerkBackendDouble:
    """TEST DOUBLE of Clerk's Backend API: tokens it knows, and faults on demand (``status``,
    or :meth:`hold`: no answer until :meth:`release`)."""

    def __init__(self) -> None:
        self.tokens: dict[str, dict[str, Any]] = {}
        self.status = 200
        self.requests: list[dict[str, Any]] = []
        self._answering = asyncio.Event()
        self._answering.set()
        self.app = Starlette(
            routes=[Route("/v1/m2m_tokens/verify", self._verify, methods=["POST"])]
        )

    def hold(self) -> None:
        self._answering.clear()

    def release(self) -> None:
        self._answering.set()

    async def _verify(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append({"body": body, "authorization": request.headers.get("authorization")})
        await self._answering.wait()
        if self.status != 200:
            return JSONResponse({"errors": [{"code": "server_error"}]}, self.status)
        if request.headers.get("authorization") != f"Bearer {SECRET}":
            return JSONResponse({"errors": [{"code": "authentication_invalid"}]}, 401)
        token = self.tokens.get(body.get("token"))
        if token is None:
            return JSONResponse({"errors": [{"code": "resource_not_found"}]}, 404)
        return JSONResponse(token)


def clerk_token(subject: str = "mch_agent", *, now: float = NOW, **fields: Any) -> dict[str, Any]:
    """What Clerk answers for a token issued at ``now`` (the verifier's fake wall clock unless
    said otherwise), valid an hour."""
    now_ms = int(now * 1000)
    return {
        "object": "machine_to_machine_token",
        "id": "mt_123",
        "subject": subject,
        "scopes": [OURS],
        "claims": None,
        "revoked": False,
        "expired": False,
        "expiration": now_ms + 3_600_000,
        "created_at": now_ms,
        **fields,
    }


@pytest.fixture
async def clerk() -> AsyncIterator[tuple[ClerkBackendDouble, OpaqueMachineVerifier]]:
    """The double, and a verifier whose clocks (the caches' and the expiry check's) are fake:
    they stand at NOW, whenever and however slowly the test runs."""
    double = ClerkBackendDouble()
    async with serve(double.app) as url, httpx.AsyncClient(timeout=CLIENT_TIMEOUT) as http:
        clocks = {"clock": FakeClock(), "wall_clock": FakeClock()}
        yield double, OpaqueMachineVerifier(url, SECRET, OURS, http, **clocks)


async def refusal(verifier: OpaqueMachineVerifier, token: str) -> str:
    with pytest.raises(MachineTokenRefused) as refused:
        await verifier.verify(token)
    return refused.value.reason


async def test_a_valid_token_is_a_machine_and_is_remembered_briefly(clerk):
    double, verifier = clerk
    double.tokens["mt_good"] = clerk_token()
    first = await verifier.verify("mt_good")
    again = await verifier.verify("mt_good")
    assert first == again
    assert (first.user_id, first.kind, first.scopes) == ("mch_agent", "machine", {"agents"})
    assert verifier.calls == 1 and len(double.requests) == 1
    assert double.requests[0] == {"body": {"token": "mt_good"}, "authorization": f"Bearer {SECRET}"}


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (clerk_token(revoked=True), "revoked_or_expired"),
        (clerk_token(expired=True), "revoked_or_expired"),
        (clerk_token(expiration=int(NOW * 1000) - 1000), "revoked_or_expired"),
        (clerk_token(scopes=["mch_someone_else"]), "machine_not_in_scope"),
        (clerk_token(subject="user_123"), "not_a_machine"),
    ],
)
async def test_tokens_clerk_vouches_for_are_still_checked(clerk, token, reason):
    double, verifier = clerk
    double.tokens["mt_x"] = token
    assert await refusal(verifier, "mt_x") == reason


async def test_an_unknown_token_is_refused_and_not_asked_about_again_at_once(clerk):
    double, verifier = clerk
    assert await refusal(verifier, "mt_unknown") == "clerk_refused_404"
    assert await refusal(verifier, "mt_unknown") == "refused_recently"
    assert len(double.requests) == 1


@pytest.mark.parametrize("fault", ["status", "silent"])
async def test_clerk_failing_refuses_the_token_and_the_next_call_asks_again(clerk, fault):
    double, verifier = clerk
    double.tokens["mt_good"] = clerk_token()
    if fault == "status":
        double.status = 503
    else:
        double.hold()  # no answer at all: only the client's timeout ends the call
    try:
        async with asyncio.timeout(10 * CLIENT_TIMEOUT):  # that timeout, nothing longer
            assert await refusal(verifier, "mt_good") == "clerk_unavailable"
    finally:
        double.status = 200
        double.release()
    assert (await verifier.verify("mt_good")).user_id == "mch_agent"  # an outage is not cached


async def test_clerk_unreachable_fails_closed(unused_tcp_port):
    async with httpx.AsyncClient(timeout=CLIENT_TIMEOUT) as http:
        verifier = OpaqueMachineVerifier(f"http://127.0.0.1:{unused_tcp_port}", SECRET, OURS, http)
        assert await refusal(verifier, "mt_good") == "clerk_unavailable"


@pytest.mark.opt_in
@pytest.mark.skipif(
    not (os.environ.get("CLERK_SECRET_KEY") and os.environ.get("CLERK_TEST_M2M_TOKEN")),
    reason="opt-in: set CLERK_SECRET_KEY and CLERK_TEST_M2M_TOKEN (an opaque mt_ token)",
)
async def test_real_clerk_verifies_an_opaque_token():
    async with httpx.AsyncClient(timeout=5) as http:
        verifier = OpaqueMachineVerifier(
            os.environ.get("CLERK_API_URL", "https://api.clerk.com"),
            os.environ["CLERK_SECRET_KEY"],
            None,
            http,
        )
        principal = await verifier.verify(os.environ["CLERK_TEST_M2M_TOKEN"])
    assert principal.kind == "machine" and principal.user_id.startswith("mch_")
