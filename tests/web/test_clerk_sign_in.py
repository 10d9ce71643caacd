"""Signing in to the web app through Clerk itself (web-demo/src/auth/ClerkGate.tsx, Clerk's
React SDK): opt-in, it needs a Clerk development instance's Frontend and Backend APIs, which
cannot be reached here. Set ``CLERK_PUBLISHABLE_KEY`` and ``CLERK_SECRET_KEY`` of a development
instance and ``CLERK_TEST_USER_ID`` (one of its users) to run it.

As Clerk's own Playwright helpers (``@clerk/testing``) do: a testing token from the Backend API
rides on every Frontend API request, so that bot protection lets the headless browser through,
and the user signs in with a one-time sign-in token (the ``ticket`` strategy) through the page's
``window.Clerk``. From then on every request of the app must carry a Clerk session token that
the server verifies against the instance's JWKS: the chat answers, and the thread is the
signed-in user's alone. The model is the Ollama TEST DOUBLE (no Ollama server runs here)."""

from __future__ import annotations

import os
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, Request, Route, expect

from agent_server.config import frontend_api
from bench.servers import free_port
from tests.conftest import citadel, double_model
from tests.doubles.ollama import OllamaDouble
from tests.support.browser import WEB_APP, screenshot
from tests.support.waiting import PATIENCE
from tests.web.test_chat_page import TIMEOUT, answered_chat

PUBLISHABLE_KEY = os.environ.get("CLERK_PUBLISHABLE_KEY", "")
SECRET_KEY = os.environ.get("CLERK_SECRET_KEY", "")
USER_ID = os.environ.get("CLERK_TEST_USER_ID", "")
BACKEND_API = os.environ.get("CLERK_API_URL", "https://api.clerk.com")

pytestmark = [
    pytest.mark.opt_in,
    pytest.mark.slow,
    pytest.mark.skipif(
        not (PUBLISHABLE_KEY and SECRET_KEY and USER_ID),
        reason="no Clerk instance: set CLERK_PUBLISHABLE_KEY, CLERK_SECRET_KEY (a development "
        "instance's) and CLERK_TEST_USER_ID",
    ),
]

TESTING_TOKEN_PARAM = "__clerk_testing_token"
SIGN_IN = """async (ticket) => {
  const attempt = await window.Clerk.client.signIn.create({ strategy: "ticket", ticket });
  if (attempt.status !== "complete") throw new Error(`sign-in ${attempt.status}`);
  await window.Clerk.setActive({ session: attempt.createdSessionId });
}"""


async def backend(path: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST to Clerk's Backend API with the instance's secret key."""
    headers = {"Authorization": f"Bearer {SECRET_KEY}"}
    async with httpx.AsyncClient(base_url=f"{BACKEND_API}/v1", timeout=PATIENCE) as client:
        response = await client.post(path, json=body, headers=headers)
    assert response.is_success, response.text
    return response.json()


async def test_a_user_signed_in_through_clerk_chats_with_clerk_session_tokens(
    browser: Browser, ollama: OllamaDouble, request: pytest.FixtureRequest
):
    port = free_port()
    origin = f"http://127.0.0.1:{port}"  # the session tokens' authorized party
    settings = {
        "env": "production",
        "auth": "clerk",
        "clerk_publishable_key": PUBLISHABLE_KEY,
        "clerk_authorized_parties": [origin],
    }
    testing_token = (await backend("/testing_tokens", {}))["token"]

    async def with_testing_token(route: Route) -> None:
        url = httpx.URL(route.request.url).copy_set_param(TESTING_TOKEN_PARAM, testing_token)
        await route.continue_(url=str(url))

    sent: list[Request] = []  # the app's requests to the server
    async with citadel(double_model(ollama), port=port, web_dir=WEB_APP, **settings) as url:
        context = await browser.new_context(base_url=url, viewport={"width": 1280, "height": 800})
        await context.route(f"https://{frontend_api(PUBLISHABLE_KEY)}/v1/**", with_testing_token)
        page = await context.new_page()
        page.on("request", lambda r: sent.append(r) if r.url.startswith(origin) else None)
        try:
            await page.goto("/chat")
            await page.wait_for_function("window.Clerk && window.Clerk.loaded", timeout=TIMEOUT)
            await expect(page.locator(".sign-in")).to_be_visible(timeout=TIMEOUT)
            ticket = (await backend("/sign_in_tokens", {"user_id": USER_ID}))["token"]
            await page.evaluate(SIGN_IN, ticket)
            await expect(page.locator(".user-button")).to_be_visible(timeout=TIMEOUT)

            thread_id = await answered_chat(page, ollama, "Who am I?", "A signed-in user.")
            token = await page.evaluate("window.Clerk.session.getToken()")
        finally:
            await screenshot(page, request.node.name)
            await context.close()

        async with httpx.AsyncClient(base_url=url, timeout=PATIENCE) as client:
            own = await client.get(
                f"/threads/{thread_id}", headers={"Authorization": f"Bearer {token}"}
            )
            anonymous = await client.get(f"/threads/{thread_id}")

    assert own.status_code == 200, own.text
    assert [m["content"] for m in own.json()["messages"]] == ["Who am I?", "A signed-in user."]
    assert anonymous.status_code == 401
    # Every API request of the signed-in app carried a session token (the page, its scripts and
    # /app/config are public).
    api_calls = [r for r in sent if r.resource_type in ("fetch", "xhr", "eventsource")]
    api_calls = [r for r in api_calls if not r.url.endswith("/app/config")]
    assert api_calls
    assert all((r.headers.get("authorization") or "").startswith("Bearer ") for r in api_calls), [
        r.url for r in api_calls
    ]
