"""``GET /voice/ws`` with remote speech (``stt_url``, ``tts_url``): a real server and
livekit-plugins-openai talking to the OpenAI-compatible speech TEST DOUBLE (tests/doubles/
speech.py: real Whisper tiny.en and espeak-ng behind OpenAI's endpoints); the chat model is
the Ollama TEST DOUBLE. And a remote speech server that is down or failing: the turn is lost
with an ``error`` frame (``stt_unavailable``, ``tts_unavailable``), never silently, and the
session goes on. With ``CITADEL_TEST_STT_URL`` and ``CITADEL_TEST_TTS_URL`` set, the first
case also runs against those real servers (opt-in; none can be installed here)."""

from __future__ import annotations

import contextlib
import os

import httpx
import pytest

from bench.servers import free_port
from tests.conftest import citadel, double_model
from tests.doubles.ollama import ScriptedReply, text_reply
from tests.doubles.speech import speech_double
from tests.server.test_history import hydrate
from tests.support.voice import RATE, answered, spoken, voice_session, word_error_rate, words

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

QUESTION = "What is the refund policy for enterprise customers?"
ANSWER = "Enterprise customers get a full refund within thirty days."
KEY = "sk-citadel-speech-test"
STT_MODEL = "Systran/faster-whisper-tiny.en"  # as a speaches server names its models
TTS_MODEL, TTS_VOICE = "kokoro", "af_heart"  # as Kokoro-FastAPI names its own


def nowhere() -> str:
    """The base URL of a speech server that is down: nothing listens on its port."""
    return f"http://127.0.0.1:{free_port()}/v1"


def errors(client) -> list[str]:
    return [frame["code"] for frame in client.of("error")]


async def test_a_spoken_question_is_heard_and_answered_by_the_remote_speech_server(ollama):
    ollama.enqueue(ScriptedReply(text_reply(ANSWER)))
    async with speech_double() as (speech, base_url):
        remote = {
            "stt_url": base_url,
            "stt_model": STT_MODEL,
            "tts_url": base_url,
            "tts_model": TTS_MODEL,
            "tts_voice": TTS_VOICE,
            "speech_api_key": KEY,
        }
        async with citadel(double_model(ollama), **remote) as url:
            async with voice_session(url) as voice:
                await voice.say(await spoken(QUESTION))
                await voice.until(lambda c: answered(1)(c) and bool(c.of("metrics")))
                thread_id = voice.of("session.started")[0]["threadId"]
            async with httpx.AsyncClient() as client:
                messages = await hydrate(client, url, thread_id)

    # The question was transcribed by the remote server, with the configured model and key:
    # one request, the utterance as a WAV file at the client's rate.
    [heard] = speech.transcriptions
    assert (heard.model, heard.language, heard.authorization) == (STT_MODEL, "en", f"Bearer {KEY}")
    assert (heard.filename, heard.content_type, heard.sample_rate) == (
        "file.wav",
        "audio/wav",
        RATE,
    )
    assert 2.0 < heard.seconds < 6.0  # the question (3 s) and the silence that ended it
    assert voice.heard() == [heard.text]
    assert {"refund", "policy", "customers"} <= set(words(heard.text))
    assert word_error_rate(QUESTION, heard.text) <= 0.3
    assert [m["content"] for m in ollama.requests[-1]["messages"] if m["role"] == "user"] == [
        heard.text
    ]
    # The answer was synthesized by the remote server, with the configured model, voice, key.
    assert speech.speeches, "the speech server was never asked"
    assert {(s.model, s.voice, s.authorization) for s in speech.speeches} == {
        (TTS_MODEL, TTS_VOICE, f"Bearer {KEY}")
    }
    assert {s.response_format for s in speech.speeches} == {"pcm"}
    assert words(" ".join(s.input for s in speech.speeches)) == words(ANSWER)
    # Its 24 kHz audio reached the client at the client's rate, all of it.
    assert voice.of("audio.start") == [{"type": "audio.start", "sampleRate": RATE}]
    assert voice.of("audio.end") == [{"type": "audio.end", "interrupted": False}]
    synthesized = sum(s.seconds for s in speech.speeches)
    received = sum(map(len, voice.audio)) / (2 * RATE)
    assert synthesized > 2.0 and abs(received - synthesized) < 0.1
    assert voice.answers() == [ANSWER] and errors(voice) == []
    # The turn is the thread's.
    assert [(m["role"], m["content"]) for m in messages] == [
        ("user", heard.text),
        ("assistant", ANSWER),
    ]


async def test_a_dead_speech_to_text_server_loses_each_spoken_turn_with_an_error_frame(ollama):
    """Each spoken turn fails after livekit-agents' retries (about 4 s) with an
    ``stt_unavailable`` frame; the socket stays open, and typed turns are still answered
    (spoken offline here). Five failures in a row: livekit-agents would have closed the
    session after the fourth, leaving the socket on a session that answers nothing."""
    ollama.enqueue(ScriptedReply(text_reply("Thirty days.")))
    async with citadel(double_model(ollama), stt_url=nowhere(), speech_api_key=KEY) as url:
        async with voice_session(url) as voice, voice_session(url) as bystander:
            for failures in range(1, 6):
                await voice.say(await spoken("Hello, can you hear me?"))
                await voice.until(lambda c, n=failures: len(c.of("error")) == n)
            await voice.send(type="text", text="How long do refunds take?")
            await voice.until(answered(1))
            thread_id = voice.of("session.started")[0]["threadId"]
            await voice.send(type="session.end")
            await voice.until(lambda c: c.closed is not None)
        async with httpx.AsyncClient() as client:
            messages = await hydrate(client, url, thread_id)

    assert errors(voice) == ["stt_unavailable"] * 5
    assert "not heard" in voice.of("error")[0]["message"]
    # Nothing was heard: the only user transcript is the typed turn, answered in speech...
    assert voice.heard() == ["How long do refunds take?"]
    assert voice.answers() == ["Thirty days."] and voice.audio
    # ...the session ended as the client asked, and the thread holds the typed turn alone.
    assert voice.closed == (1000, "session.end")
    assert [m["content"] for m in messages] == ["How long do refunds take?", "Thirty days."]
    # Another session on the same server was not told of this one's failures.
    assert bystander.closed is None and bystander.of("error") == []


@pytest.mark.parametrize("failure", ["down", "http_503"])
async def test_a_failing_text_to_speech_server_leaves_the_answer_unspoken_with_an_error_frame(
    ollama, failure
):
    """The answer is generated and kept in the thread; the speech for it fails after
    livekit-agents' retries with a ``tts_unavailable`` frame, and the session goes on. The
    server is down (nothing listens), or answers 503 to every request."""
    ollama.enqueue(
        ScriptedReply(text_reply("Thirty days.")), ScriptedReply(text_reply("Five days."))
    )
    async with contextlib.AsyncExitStack() as stack:
        if failure == "down":
            speech, tts_url = None, nowhere()
        else:
            speech, tts_url = await stack.enter_async_context(speech_double())
            speech.status = 503
        url = await stack.enter_async_context(
            citadel(double_model(ollama), tts_url=tts_url, speech_api_key=KEY)
        )
        async with voice_session(url) as voice:
            await voice.send(type="text", text="How long do refunds take?")
            await voice.until(lambda c: errors(c) == ["tts_unavailable"])
            await voice.send(type="text", text="And the money?")
            await voice.until(lambda c: errors(c) == ["tts_unavailable"] * 2)
            thread_id = voice.of("session.started")[0]["threadId"]
            assert voice.closed is None
        async with httpx.AsyncClient() as client:
            messages = await hydrate(client, url, thread_id)

    assert "not spoken" in voice.of("error")[0]["message"]
    if speech is not None:  # each answer was asked for four times (livekit-agents' retries)
        assert speech.failed == ["/v1/audio/speech"] * 8 and speech.speeches == []
    # Both runs finished, and nothing was spoken.
    finished = [e for e in voice.agui() if e["type"] == "RUN_FINISHED"]
    assert [e["outcome"]["type"] for e in finished] == ["success", "success"]
    assert voice.of("audio.start") == [] and voice.audio == []
    assert [m["content"] for m in messages] == [
        "How long do refunds take?",
        "Thirty days.",
        "And the money?",
        "Five days.",
    ]


REAL = {
    name: os.environ.get(f"CITADEL_TEST_{name.upper()}")
    for name in ("stt_url", "stt_model", "tts_url", "tts_model", "tts_voice", "speech_api_key")
}


@pytest.mark.skipif(
    not (REAL["stt_url"] and REAL["tts_url"]),
    reason="no real speech servers: set CITADEL_TEST_STT_URL and CITADEL_TEST_TTS_URL "
    "(and CITADEL_TEST_STT_MODEL, _TTS_MODEL, _TTS_VOICE, _SPEECH_API_KEY as they need)",
)
async def test_a_spoken_question_is_heard_and_answered_by_real_speech_servers(ollama):
    ollama.enqueue(ScriptedReply(text_reply(ANSWER)))
    remote = {name: value for name, value in REAL.items() if value}
    async with citadel(double_model(ollama), **remote) as url, voice_session(url) as voice:
        await voice.say(await spoken(QUESTION))
        await voice.until(answered(1), within=120)
    [heard] = voice.heard()
    assert "refund" in words(heard) and errors(voice) == []
    assert voice.answers() == [ANSWER] and sum(map(len, voice.audio)) / (2 * RATE) > 1.0
