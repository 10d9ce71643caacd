"""The web app in real headless Chromium against a real Citadel server (Postgres, the
embedded knowledge base) whose model is the scripted Ollama TEST DOUBLE."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from playwright.async_api import Browser, Page

from tests.conftest import citadel, double_model
from tests.doubles.ollama import OllamaDouble
from tests.support.browser import WEB_APP, chromium, screenshot


@dataclass
class WebServer:
    url: str
    ollama: OllamaDouble


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    if not (WEB_APP / "index.html").is_file():
        pytest.fail(f"the web app is not built in {WEB_APP}: `make test` builds it")
    async with chromium() as browser:
        yield browser


@pytest.fixture
async def web(ollama: OllamaDouble) -> AsyncIterator[WebServer]:
    async with citadel(double_model(ollama), web_dir=WEB_APP) as url:
        yield WebServer(url, ollama)


@pytest.fixture
async def page(
    browser: Browser, web: WebServer, request: pytest.FixtureRequest
) -> AsyncIterator[Page]:
    """A page in a fresh browser context (no shared storage) on ``web``; its screenshot is
    saved when the test ends, however it ends."""
    context = await browser.new_context(base_url=web.url, viewport={"width": 1280, "height": 800})
    page = await context.new_page()
    # The page's console, printed (so shown when a test fails).
    page.on("console", lambda message: print(f"console.{message.type}: {message.text}"))
    page.on("pageerror", lambda error: print(f"page error: {error}"))
    try:
        yield page
    finally:
        await screenshot(page, request.node.name)
        await context.close()
