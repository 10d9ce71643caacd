"""The web app with CITADEL_AUTH=clerk (production settings): the page's token source (the one
module every request asks, web-demo/src/auth/token.ts) is given tokens signed against the
tests' local key, fresh for each request as Clerk's would be. A thread is its owner's alone:
another user opening its URL sees "not found", never its messages."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Browser, BrowserContext, expect

from tests.conftest import citadel, double_model
from tests.doubles.ollama import OllamaDouble
from tests.support.browser import WEB_APP, screenshot
from tests.support.clerk import clerk_settings, session_token
from tests.web.test_chat_page import TIMEOUT, answered_chat, assistant


@pytest.fixture
async def signed_in_server(ollama: OllamaDouble) -> AsyncIterator[str]:
    async with citadel(double_model(ollama), web_dir=WEB_APP, **clerk_settings()) as url:
        yield url


async def signed_in(browser: Browser, url: str, user: str) -> BrowserContext:
    """A browser context whose pages sign every request with a fresh token of ``user``."""
    context = await browser.new_context(base_url=url, viewport={"width": 1280, "height": 800})
    await context.expose_function("citadelTestToken", lambda: session_token(user))
    await context.add_init_script("window.citadelTokenSource = () => window.citadelTestToken();")
    return context


async def test_a_signed_in_user_chats_and_another_user_sees_not_found(
    browser: Browser,
    signed_in_server: str,
    ollama: OllamaDouble,
    request: pytest.FixtureRequest,
):
    alice = await signed_in(browser, signed_in_server, "alice")
    bob = await signed_in(browser, signed_in_server, "bob")
    try:
        page = await alice.new_page()
        thread_id = await answered_chat(
            page, ollama, "A secret for Alice.", "Only Alice may read this."
        )
        await page.reload()  # her own thread comes back
        await expect(assistant(page).last).to_contain_text("Only Alice", timeout=TIMEOUT)
        await screenshot(page, f"{request.node.name}-alice")

        intruder = await bob.new_page()
        await intruder.goto(f"/chat/{thread_id}")
        await expect(intruder.get_by_test_id("thread-not-found")).to_be_visible(timeout=TIMEOUT)
        await expect(intruder.get_by_text("A secret for Alice.")).to_have_count(0)
        await expect(intruder.get_by_text("Only Alice may read this.")).to_have_count(0)
        await screenshot(intruder, f"{request.node.name}-bob")
    finally:
        await alice.close()
        await bob.close()


async def test_without_a_token_the_api_refuses_the_page(browser: Browser, signed_in_server: str):
    context = await browser.new_context(base_url=signed_in_server)
    try:
        page = await context.new_page()
        response = await page.request.get("/api/copilotkit/info")
        assert response.status == 401
        assert (await page.request.get("/app/config")).status == 200  # public: how to sign in
    finally:
        await context.close()
