"""The voice page's LiveKit mode (web-demo/src/pages/voice/livekit.ts, ``livekit-client``) in a
real LiveKit room: opt-in, it needs a LiveKit server, which cannot be installed here. Set
``LIVEKIT_URL`` (and ``LIVEKIT_API_KEY``/``LIVEKIT_API_SECRET`` unless they are the
``devkey``/``secret`` of ``livekit-server --dev``) to run it.

The page joins a room through ``POST /voice/token`` and publishes Chromium's fake microphone,
which plays an espeak-ng question from a WAV file. The voice worker, registered under a name of
this test's own and on the same database as the web server, is dispatched into the room, hears
the question (Whisper), answers with the runtime and speaks. The page shows both transcripts,
and the turn is in the thread. The chat model is the Ollama backend on the TEST DOUBLE (no
Ollama server runs here)."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest
from playwright.async_api import expect

from agent_server.config import Settings
from tests.conftest import citadel, double_model
from tests.doubles.ollama import OllamaDouble, ScriptedReply, text_reply
from tests.support.browser import WEB_APP, chromium, screenshot
from tests.support.database import isolated_database_url
from tests.support.voice import words
from tests.support.waiting import PATIENCE
from tests.voice.services import voice_worker
from tests.voice.test_livekit_room import KEY, SECRET, URL
from tests.web.test_voice_page import ANSWER, microphone

pytestmark = [
    pytest.mark.opt_in,
    pytest.mark.slow,
    pytest.mark.timeout(300),
    pytest.mark.skipif(
        not URL,
        reason="no LiveKit server: set LIVEKIT_URL (livekit-server --dev: ws://127.0.0.1:7880)",
    ),
]


async def test_the_voice_page_talks_with_the_agent_through_a_livekit_room(
    ollama: OllamaDouble, tmp_path: Path, request: pytest.FixtureRequest
):
    ollama.enqueue(ScriptedReply(text_reply(ANSWER)))
    livekit = {
        "livekit_url": URL,
        "livekit_api_key": KEY,
        "livekit_api_secret": SECRET,
        "voice_agent_name": f"citadel-test-{uuid.uuid4().hex[:8]}",  # no other worker answers
    }
    async with (
        isolated_database_url() as database_url,
        voice_worker(
            lambda: double_model(ollama),  # made on the services' loop
            Settings(**livekit),
            retrieval="off",
            database_url=database_url,
        ),
        citadel(double_model(ollama), web_dir=WEB_APP, database_url=database_url, **livekit) as url,
        chromium(microphone=await microphone(tmp_path)) as browser,
    ):
        context = await browser.new_context(base_url=url)
        page = await context.new_page()
        try:
            await page.goto("/voice")
            thread_id = page.url.rsplit("/", 1)[-1]
            await page.get_by_label("Through LiveKit").check()
            await page.get_by_test_id("voice-talk").click()
            user = page.locator('[data-role="user"][data-final="true"]')
            await expect(user.first).to_be_visible(timeout=60_000)
            answer = page.locator('[data-role="assistant"][data-final="true"]')
            await expect(answer.first).to_have_text(f"Agent {ANSWER}", timeout=60_000)
            await expect(page.get_by_role("alert")).to_have_count(0)
            heard = (await user.first.inner_text()).removeprefix("You").strip()
        finally:
            await screenshot(page, request.node.name)
            await context.close()
        async with httpx.AsyncClient(base_url=url, timeout=PATIENCE) as client:
            thread = (await client.get(f"/threads/{thread_id}")).json()

    assert set(words(heard)) >= {"refund", "policy", "customers"}
    assert [(m["role"], m["content"]) for m in thread["messages"]] == [
        ("user", heard),
        ("assistant", ANSWER),
    ]
