"""Real headless Chromium for tests: Debian's binary driven by Playwright (1.64, the release
that speaks to Chromium 156), never a browser Playwright downloads. Pages get a fake
microphone fed from a WAV file when asked; each test saves a screenshot of its page."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path

from playwright.async_api import Browser, Page, async_playwright

CHROMIUM = Path(os.environ.get("CITADEL_TEST_CHROMIUM", "/usr/bin/chromium"))
SCREENSHOTS = Path(__file__).resolve().parents[2] / "build" / "screenshots"
WEB_APP = Path(__file__).resolve().parents[2] / "web-demo" / "dist"


@contextlib.asynccontextmanager
async def chromium(microphone: Path | None = None) -> AsyncIterator[Browser]:
    """Headless Chromium; with ``microphone``, every page's microphone plays that WAV file
    (in a loop) and permission prompts are answered yes."""
    args = ["--no-sandbox", "--disable-dev-shm-usage", "--autoplay-policy=no-user-gesture-required"]
    if microphone is not None:
        args += [
            "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={microphone}",
        ]
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=args)
        try:
            yield browser
        finally:
            await browser.close()


async def screenshot(page: Page, test_name: str) -> Path:
    """Save the page as ``build/screenshots/<test name>.png``."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', test_name)}.png"
    await page.screenshot(path=path, full_page=True)
    return path
