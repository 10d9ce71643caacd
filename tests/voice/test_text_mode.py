"""The LiveKit worker's session answers with the Citadel runtime, driven by livekit-agents'
text-mode harness (``AgentSession.run`` + ``RunResult.expect``; no room: no LiveKit server
can run here). As in the worker, the services live on a loop of their own, in a thread, and
the session reaches them through :mod:`voice.services_loop`. Store, embedder, vector engine
and speech stack are real; the chat model is the Ollama backend on OllamaDouble (a TEST
DOUBLE: no Ollama server runs here)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from agent_server.knowledge.ingest import SourceFile
from agent_server.services import Services
from agent_server.store.base import Actor
from tests.conftest import double_model
from tests.doubles.ollama import ScriptedReply, text_reply
from tests.server.test_agui_knowledge import HANDBOOK
from tests.voice.services import services_on_their_loop
from voice.services_loop import ServicesLoop
from voice.speech.stack import SpeechConfig, speech_stack
from voice.token import dispatch_metadata
from voice.worker import VoiceWorker

pytestmark = pytest.mark.slow  # the speech stack (Whisper tiny.en, silero) and the embedder

QUESTION = "How do I keep my sourdough starter going?"
ANSWER = "Feed it equal weights of flour and water every day."


async def ingest(services: Services, home: ServicesLoop, documents: list[dict[str, str]]) -> str:
    """The ingestion job's final status."""

    async def run() -> str:
        jobs = services.ingest_jobs
        assert jobs is not None
        files = [SourceFile.from_bytes(doc["name"], doc["text"].encode()) for doc in documents]
        job = await jobs.submit(services.settings.knowledge_base, files, Actor("test"))
        await jobs.wait()
        ended = await jobs.get(job.id)
        assert ended is not None
        return ended.status

    return await home.call(run())


async def voice_notes(services: Services, home: ServicesLoop) -> list[dict[str, Any]]:
    entries = await home.call(services.bus.read_feed("0-0", 100, 0))
    return [orjson.loads(entry.note) for entry in entries if entry.kind == "voice"]


async def test_a_turn_is_answered_by_the_runtime_in_the_users_thread(ollama):
    ollama.enqueue(ScriptedReply(text_reply(ANSWER)))
    model = lambda: double_model(ollama)  # noqa: E731 - made on the services' loop
    async with services_on_their_loop(model, retrieval="always") as (services, home):
        assert await ingest(services, home, HANDBOOK) == "succeeded"
        worker = VoiceWorker(
            services, home, speech_stack(SpeechConfig.from_settings(services.settings))
        )
        dispatch = await worker.admit(dispatch_metadata("user_voice", "thread_voice"))
        events: list[dict[str, Any]] = []

        async def on_event(data: bytes) -> None:
            events.append(orjson.loads(data))

        voice = worker.session("job_text", dispatch, on_event)
        await voice.start()  # no room, no audio: text only
        try:
            result = await voice.session.run(user_input=QUESTION)
        finally:
            await voice.aclose()

        said = result.expect.next_event().is_message(role="assistant").event().item
        result.expect.no_more_events()
        assert said.text_content == ANSWER

        # The runtime searched the knowledge base, shown as a tool call, before answering.
        kinds = [event["type"] for event in events]
        assert kinds[0] == "RUN_STARTED" and kinds[-1] == "RUN_FINISHED"
        [search] = [event for event in events if event["type"] == "TOOL_CALL_START"]
        assert search["toolCallName"] == "search_knowledge_base"
        assert kinds.index("TOOL_CALL_START") < kinds.index("TEXT_MESSAGE_START")
        [request] = ollama.requests
        assert "flour" in request["messages"][-1]["content"]

        # The turn is the user's thread's, as if it had been typed in the chat panel.
        thread = await home.call(services.store.load("thread_voice"))
        assert thread is not None and thread.owner == "user_voice"
        assert thread.messages[0]["role"] == "user"
        assert thread.messages[0]["content"] == QUESTION
        assert thread.messages[-1]["role"] == "assistant"
        assert thread.messages[-1]["content"] == ANSWER

        # Admins saw the session on the feed.
        notes = await voice_notes(services, home)
        assert [note["event"] for note in notes] == ["session.started", "turn", "session.ended"]
        assert {(note["sessionId"], note["threadId"], note["transport"]) for note in notes} == {
            ("job_text", "thread_voice", "livekit")
        }
