"""The chat's mic button in Chromium: CopilotKit records the fake microphone (a WAV of espeak-ng
speech, played in a loop) with MediaRecorder, uploads it to /api/copilotkit/transcribe, and
the real offline Whisper's transcript lands in the input box; sent, it is answered and kept
in the thread. The model is the scripted Ollama TEST DOUBLE."""

from __future__ import annotations

import asyncio
import wave
from pathlib import Path

import pytest
from playwright.async_api import expect

from tests.doubles.ollama import ScriptedReply, text_reply
from tests.support.browser import chromium, screenshot
from tests.support.voice import RATE, spoken, words
from tests.web.conftest import WebServer
from tests.web.test_chat_page import TIMEOUT, assistant, idle, open_chat, stored_thread

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

SENTENCE = "Please open the garden handbook."
PAUSE = 0.5  # seconds of silence around the sentence in the looped file


async def looped_sentence(folder: Path) -> tuple[Path, float]:
    """The sentence between pauses as a 16 kHz WAV, and how long one loop of it lasts."""
    speech = await spoken(SENTENCE)
    silence = bytes(int(RATE * PAUSE) * 2)
    path = folder / "sentence.wav"
    with wave.open(str(path), "wb") as file:
        file.setnchannels(1)
        file.setsampwidth(2)
        file.setframerate(RATE)
        file.writeframes(silence + speech + silence)
    return path, (len(speech) + 2 * len(silence)) / (2 * RATE)


async def test_the_mic_button_transcribes_into_the_input_and_the_turn_is_kept(
    web: WebServer, tmp_path: Path, request: pytest.FixtureRequest
):
    web.ollama.enqueue(ScriptedReply(text_reply("Here is the garden handbook.")))
    microphone, loop = await looped_sentence(tmp_path)
    async with chromium(microphone=microphone) as browser:
        context = await browser.new_context(base_url=web.url)
        page = await context.new_page()
        try:
            await open_chat(page)
            thread_id = page.url.rsplit("/", 1)[1]
            await page.get_by_test_id("copilot-start-transcribe-button").click()
            # The loop starts anywhere: two loops recorded hold the whole sentence at least
            # once. Recording longer changes nothing but the fragments around it.
            await asyncio.sleep(2 * loop)
            async with page.expect_response(lambda r: r.url.endswith("/transcribe")) as upload:
                await page.get_by_test_id("copilot-finish-transcribe-button").click()
            assert (await upload.value).status == 200
            textarea = page.get_by_test_id("copilot-chat-textarea")
            await expect(textarea).not_to_have_value("", timeout=TIMEOUT)
            heard = await textarea.input_value()
            await page.get_by_test_id("copilot-send-button").click()
            await expect(assistant(page).last).to_contain_text(
                "Here is the garden handbook.", timeout=TIMEOUT
            )
            await idle(page)
        finally:
            await screenshot(page, request.node.name)
            await context.close()
    assert {"please", "open", "garden"} <= set(words(heard)), heard
    thread = await stored_thread(web, thread_id)
    assert [(m["role"], m["content"]) for m in thread["messages"]] == [
        ("user", heard),
        ("assistant", "Here is the garden handbook."),
    ]
