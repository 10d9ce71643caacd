"""The voice page in real headless Chromium against a real server: the page's microphone is
Chromium's fake device playing an espeak-ng question from a WAV file (in a loop), captured by
the page's AudioWorklet and streamed over ``/voice/ws``; the server hears it with the real
Whisper tiny.en, the scripted Ollama TEST DOUBLE answers, espeak-ng speaks, the page plays."""

from __future__ import annotations

import wave
from pathlib import Path

import httpx
import pytest
from playwright.async_api import expect

from tests.doubles.ollama import ScriptedReply, text_reply
from tests.support.browser import chromium, screenshot
from tests.support.voice import RATE, spoken, word_error_rate, words
from tests.web.conftest import WebServer
from tests.web.test_chat_page import TIMEOUT, assistant, open_chat

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

# Words Whisper tiny.en hears the same wherever the speech falls in the 20 ms frames (the fake
# microphone's loop starts at no fixed point): it hears "enterprise" as "enter price" at some.
QUESTION = "What is the refund policy for customers?"
ANSWER = "Enterprise customers get a full refund within thirty days."


async def microphone(folder: Path) -> Path:
    """The question as a 16 kHz mono WAV: four seconds of silence before it (the session opens
    meanwhile), and enough after it that the loop does not ask again within the test."""
    path = folder / "question.wav"
    with wave.open(str(path), "wb") as file:
        file.setnchannels(1)
        file.setsampwidth(2)
        file.setframerate(RATE)
        file.writeframes(bytes(RATE * 2 * 4) + await spoken(QUESTION) + bytes(RATE * 2 * 20))
    return path


async def test_a_spoken_question_is_answered_aloud_in_the_thread_and_listed_on_the_admin_page(
    web: WebServer, tmp_path: Path, request: pytest.FixtureRequest
):
    web.ollama.enqueue(ScriptedReply(text_reply(ANSWER)))
    async with chromium(microphone=await microphone(tmp_path)) as browser:
        context = await browser.new_context(base_url=web.url)
        page = await context.new_page()
        chunks: list[bytes] = []  # the agent's audio, as the page received it
        page.on(
            "websocket",
            lambda socket: socket.on(
                "framereceived",
                lambda data: chunks.append(data) if isinstance(data, bytes) else None,
            ),
        )
        try:
            await page.goto("/voice")
            await expect(page.get_by_test_id("voice-page")).to_be_visible()
            thread_id = page.url.rsplit("/", 1)[-1]
            await page.get_by_test_id("voice-talk").click()
            user = page.locator('[data-role="user"][data-final="true"]')
            await expect(user.first).to_be_visible(timeout=60_000)
            answer = page.locator('[data-role="assistant"][data-final="true"]')
            await expect(answer.first).to_have_text(f"Agent {ANSWER}", timeout=60_000)
            # The turn's metrics follow its last audio: then every chunk received is played.
            await expect(page.get_by_test_id("voice-metrics")).to_be_visible(timeout=30_000)
            await expect(page.get_by_test_id("voice-played")).to_have_text(
                str(len(chunks)), timeout=10_000
            )
            heard = (await user.first.inner_text()).removeprefix("You").strip()
            chat_link = await page.get_by_role(
                "link", name="Open this thread in chat"
            ).get_attribute("href")
            await expect(page.get_by_role("alert")).to_have_count(0)
            # The voice turn is the chat's too: the chat page of the thread shows it.
            await screenshot(page, f"{request.node.name}-voice")
            await open_chat(page, chat_link)
            await expect(page.get_by_test_id("copilot-user-message").first).to_contain_text(
                "refund", timeout=TIMEOUT
            )
            await expect(assistant(page).last).to_contain_text(ANSWER, timeout=TIMEOUT)
            # Leaving the voice page ended the session: the admin page lists it, its one turn
            # and its end, from the feed's voice notes.
            await page.goto("/admin")
            session = page.locator(f'[data-testid="voice-session"][data-thread-id="{thread_id}"]')
            await expect(session).to_have_attribute("data-ended", "true", timeout=TIMEOUT)
            await expect(session).to_have_attribute("data-turns", "1")
            await expect(session).to_contain_text("ended (")
        finally:
            await screenshot(page, request.node.name)
            await context.close()

    assert set(words(heard)) >= {"refund", "policy", "customers"}
    assert word_error_rate(QUESTION, heard) <= 0.3
    assert chat_link == f"/chat/{thread_id}"
    assert sum(map(len, chunks)) / (2 * RATE) > 1.0  # seconds of the agent's speech
    async with httpx.AsyncClient(base_url=web.url) as client:
        thread = (await client.get(f"/threads/{thread_id}")).json()
    assert [(m["role"], m["content"]) for m in thread["messages"]] == [
        ("user", heard),
        ("assistant", ANSWER),
    ]
