"""``GET /voice/ws`` against a real server with the real offline speech stack (silero VAD,
Whisper tiny.en, espeak-ng), a real knowledge base and Postgres; the chat model is scripted
through the Ollama TEST DOUBLE. Speech is made with espeak-ng in the run; transcripts are
judged by keywords and word error rate, never exact strings."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from protocol.framing import parse_sse_stream
from tests.conftest import citadel, double_model
from tests.doubles.ollama import ScriptedReply, text_reply
from tests.server.test_agui_knowledge import ingest
from tests.server.test_history import hydrate
from tests.support.feed import admin_feed
from tests.support.metrics import scrape
from tests.support.voice import answered, spoken, voice_session, word_error_rate, words

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

POLICY = [
    {
        "name": "policies/refunds.md",
        "text": "# Refunds\n\nEnterprise customers may ask for a full refund within thirty days "
        "of purchase. Refunds are paid to the original card within five business days.",
    }
]
QUESTION = "What is the refund policy for enterprise customers?"
ANSWER = "Enterprise customers get a full refund within thirty days [1]."
LONG_ANSWER = (
    "Here is everything about refunds. Enterprise customers may ask for a full refund within "
    "thirty days of purchase. The money is paid back to the original card. It takes up to "
    "five business days. Partial refunds are possible for unused seats. Ask your account "
    "manager for the form. Keep your invoice number ready when you call."
)


async def test_a_spoken_question_is_answered_from_the_knowledge_base_in_speech(ollama):
    ollama.enqueue(ScriptedReply(text_reply(f"{ANSWER}\n\nSources:\n[1] Refunds")))
    async with citadel(double_model(ollama), retrieval="always") as url:
        await ingest(url, POLICY)
        async with admin_feed(url, kinds="voice") as feed:
            async with voice_session(url) as voice:
                [started] = voice.of("session.started")
                await voice.say(await spoken(QUESTION))
                await voice.until(lambda c: answered(1)(c) and bool(c.of("metrics")))
            await feed.until(lambda items: _notes(items)[-1:] == ["session.ended"])
        async with httpx.AsyncClient(base_url=url) as client:
            messages = await hydrate(client, url, started["threadId"])
            measured = await scrape(client)

    [heard] = voice.heard()
    assert word_error_rate(QUESTION, heard) <= 0.3 and "refund" in words(heard)
    # The runtime searched the knowledge base: the tool call is in the socket's AG-UI events.
    events = voice.agui()
    kinds = [event["type"] for event in events]
    [search] = [e for e in events if e["type"] == "TOOL_CALL_START"]
    assert search["toolCallName"] == "search_knowledge_base"
    assert kinds[0] == "RUN_STARTED" and kinds[-1] == "RUN_FINISHED"
    assert kinds.index("TOOL_CALL_RESULT") < kinds.index("TEXT_MESSAGE_START")
    # Speech came back: what was said is the answer without its citation marks and sources.
    assert voice.of("audio.start") == [{"type": "audio.start", "sampleRate": 16_000}]
    assert voice.of("audio.end") == [{"type": "audio.end", "interrupted": False}]
    assert sum(map(len, voice.audio)) / 32_000 > 1.0  # seconds of speech
    assert voice.answers() == ["Enterprise customers get a full refund within thirty days."]
    [metrics] = voice.of("metrics")
    assert metrics["interrupted"] is False and metrics["endOfSpeechToAudio"] > 0
    assert {"listening", "thinking", "speaking"} <= {f["state"] for f in voice.of("state")}
    # The model was asked the transcribed question, with the passage found.
    request = ollama.requests[-1]["messages"]
    assert [m["content"] for m in request if m["role"] == "user"] == [heard]
    assert "thirty days" in request[-1]["content"]  # the search's result
    # The turn is the thread's: hydration shows the spoken question and the whole answer.
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "assistant"]
    assert messages[0]["content"] == heard and messages[-1]["content"].startswith(ANSWER)
    assert messages[1]["toolCalls"][0]["function"]["name"] == "search_knowledge_base"
    # Admins saw the session, the turn with its latencies, and its end.
    notes = [item["note"] for item in feed.items if item["kind"] == "voice"]
    assert [n["event"] for n in notes] == ["session.started", "turn", "session.ended"]
    assert {n["threadId"] for n in notes} == {started["threadId"]}
    assert notes[1]["endOfSpeechToAudio"] == metrics["endOfSpeechToAudio"]
    # ...and so does /metrics.
    for histogram in ("turn_latency_seconds", "stt_duration_seconds", "tts_first_byte_seconds"):
        assert measured[(f"citadel_voice_{histogram}_count", ())] == 1.0


def _speaking(client) -> str:
    """The agent's words spoken so far (its last interim transcript)."""
    said = [f["text"] for f in client.of("transcript") if f["role"] == "assistant"]
    return said[-1] if said else ""


def _notes(items: list[dict]) -> list[str]:
    return [item["note"]["event"] for item in items if item["kind"] == "voice"]


async def test_a_typed_turn_is_answered_in_speech_in_the_same_thread(ollama):
    ollama.enqueue(
        ScriptedReply(text_reply("Thirty days.")), ScriptedReply(text_reply("Five days."))
    )
    async with citadel(double_model(ollama)) as url:
        async with voice_session(url) as voice:
            await voice.send(type="text", text="How long do refunds take?")
            await voice.until(answered(1))
            thread_id = voice.of("session.started")[0]["threadId"]
        # A second session joins the same thread, and its turn follows the first.
        async with voice_session(url, thread_id=thread_id) as again:
            await again.send(type="text", text="And the money?")
            await again.until(answered(1))
        async with httpx.AsyncClient() as client:
            messages = await hydrate(client, url, thread_id)
    assert voice.of("transcript")[0] == {
        "type": "transcript",
        "role": "user",
        "text": "How long do refunds take?",
        "final": True,
    }
    assert voice.answers() == ["Thirty days."] and again.answers() == ["Five days."]
    assert [m["content"] for m in messages] == [
        "How long do refunds take?",
        "Thirty days.",
        "And the money?",
        "Five days.",
    ]


async def test_barge_in_stops_playback_and_the_thread_keeps_only_what_was_said(ollama):
    ollama.enqueue(
        ScriptedReply(text_reply(LONG_ANSWER)), ScriptedReply(text_reply("Sure, stopping."))
    )
    async with citadel(double_model(ollama)) as url:
        async with voice_session(url) as voice:
            await voice.send(type="text", text="Tell me everything about refunds.")
            # Cut in once the first sentence has been spoken.
            await voice.until(lambda c: "everything" in words(_speaking(c)))
            await voice.say(await spoken("Stop, that is enough, thank you."))
            await voice.until(answered(2))
            thread_id = voice.of("session.started")[0]["threadId"]
        async with httpx.AsyncClient() as client:
            messages = await hydrate(client, url, thread_id)

    first_end, second_end = voice.of("audio.end")
    assert first_end["interrupted"] is True and second_end["interrupted"] is False
    said = voice.answers()[0]
    # What was said is a strict, non-empty beginning of the answer...
    assert 0 < len(words(said)) < len(words(LONG_ANSWER))
    assert words(LONG_ANSWER)[: len(words(said))] == words(said)
    # ...and it is what the thread keeps as the answer; the interruption was heard as a turn.
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"]
    assert messages[1]["content"] == said
    assert "stop" in words(messages[2]["content"])
    assert messages[3]["content"] == "Sure, stopping."


@pytest.mark.parametrize("rate", [8_000, 48_000])
async def test_the_agent_speaks_at_the_sample_rate_the_client_chose(ollama, rate):
    ollama.enqueue(ScriptedReply(text_reply("Thirty days, for every enterprise customer.")))
    start = {"type": "session.start", "sampleRate": rate}
    async with citadel(double_model(ollama)) as url, voice_session(url, start=start) as voice:
        await voice.until(lambda c: bool(c.of("session.started")))
        await voice.send(type="text", text="How long?")
        await voice.until(answered(1))
    assert voice.of("audio.start") == [{"type": "audio.start", "sampleRate": rate}]
    # espeak-ng says this sentence in about two seconds, whatever the rate it is sent at
    assert 1.0 < sum(map(len, voice.audio)) / (2 * rate) < 4.0


async def test_a_chat_panel_joining_the_thread_sees_the_voice_run_live(ollama):
    release = asyncio.Event()
    reply = text_reply("Thirty days. For everyone.", chunks=2)
    ollama.enqueue(ScriptedReply(reply, holds={1: release}))
    async with citadel(double_model(ollama)) as url, voice_session(url) as voice:
        await voice.send(type="text", text="How long?")
        await voice.until(lambda c: "TEXT_MESSAGE_CONTENT" in [e["type"] for e in c.agui()])
        thread_id = voice.of("session.started")[0]["threadId"]
        body = {"threadId": thread_id, "protocolVersion": "1.0"}
        panel: list[dict] = []
        async with (
            httpx.AsyncClient(base_url=url) as client,
            client.stream("POST", "/agui/connect", json=body) as response,
        ):
            async for event in parse_sse_stream(response.aiter_bytes()):
                panel.append(event)
                if event["type"] == "TEXT_MESSAGE_CONTENT":
                    release.set()  # the panel is following: let the answer go on
                if event["type"] == "RUN_FINISHED" and event["runId"].startswith("voice_"):
                    break
        await voice.until(answered(1))
    voice_run = voice.agui()[0]["runId"]
    streamed = "".join(e["delta"] for e in panel if e["type"] == "TEXT_MESSAGE_CONTENT")
    assert streamed == "Thirty days. For everyone." and panel[-1]["runId"] == voice_run
    [snapshot] = [e for e in panel if e["type"] == "MESSAGES_SNAPSHOT"]
    assert snapshot["messages"][-1] == {**snapshot["messages"][-1], "content": "How long?"}
