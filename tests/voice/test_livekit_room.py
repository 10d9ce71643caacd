"""The worker in a real LiveKit room: opt-in, it needs a LiveKit server, which cannot be
installed here. Set ``LIVEKIT_URL`` (and ``LIVEKIT_API_KEY``/``LIVEKIT_API_SECRET`` unless
they are the ``devkey``/``secret`` of ``livekit-server --dev``) to run it.

A user joins with a token minted as ``POST /voice/token`` mints them; the worker, registered
under a name of this test's own, is dispatched by it, joins, and answers a typed ``lk.chat``
message with the runtime, mirroring the run's AG-UI events on the ``ag-ui`` topic. The store
is the real Postgres; the chat model is the Ollama backend on OllamaDouble (a TEST DOUBLE: no
Ollama server runs here)."""

from __future__ import annotations

import asyncio
import os
import uuid
from typing import Any

import orjson
import pytest
from livekit import rtc
from livekit.agents.types import ATTRIBUTE_AGENT_STATE

from agent_server.config import Settings
from tests.conftest import double_model
from tests.doubles.ollama import ScriptedReply, text_reply
from tests.support.waiting import PATIENCE
from tests.voice.services import voice_worker
from voice.room import AGUI_TOPIC
from voice.token import mint_room_token

URL = os.environ.get("LIVEKIT_URL", "")
KEY = os.environ.get("LIVEKIT_API_KEY", "devkey")
SECRET = os.environ.get("LIVEKIT_API_SECRET", "secret")

pytestmark = [
    pytest.mark.opt_in,
    pytest.mark.slow,
    pytest.mark.skipif(
        not URL,
        reason="no LiveKit server: set LIVEKIT_URL (livekit-server --dev: ws://127.0.0.1:7880)",
    ),
]

QUESTION = "What is in the handbook?"
ANSWER = "Gardening and a sourdough starter."


class UserInRoom:
    """The user's side of the room: the agent's states, and its ``ag-ui`` events."""

    def __init__(self, room: rtc.Room) -> None:
        self.room = room
        self.agent_states: list[str] = []  # as published in its lk.agent.state attribute
        self.agui: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.senders: set[str] = set()
        self._changed = asyncio.Event()
        self._reads: set[asyncio.Task[None]] = set()
        room.on("participant_connected", self._check)
        room.on("participant_attributes_changed", lambda _, participant: self._check(participant))
        room.register_text_stream_handler(AGUI_TOPIC, self._on_agui)

    def check_present(self) -> None:
        for participant in self.room.remote_participants.values():
            self._check(participant)

    async def agent_went(self, *states: str) -> None:
        """Until the agent has been in ``states``, in this order (others in between)."""
        async with asyncio.timeout(PATIENCE * 3):
            while not _in_order(self.agent_states, states):
                self._changed.clear()
                await self._changed.wait()

    async def run_events(self) -> list[dict[str, Any]]:
        """The ``ag-ui`` events up to the run's end."""
        events: list[dict[str, Any]] = []
        async with asyncio.timeout(PATIENCE * 6):
            while not events or events[-1]["type"] not in ("RUN_FINISHED", "RUN_ERROR"):
                events.append(await self.agui.get())
        return events

    def _check(self, participant: rtc.RemoteParticipant) -> None:
        if participant.kind != rtc.ParticipantKind.PARTICIPANT_KIND_AGENT:
            return
        state = participant.attributes.get(ATTRIBUTE_AGENT_STATE)
        if state and self.agent_states[-1:] != [state]:
            self.agent_states.append(state)
            self._changed.set()

    def _on_agui(self, reader: rtc.TextStreamReader, sender: str) -> None:
        async def read() -> None:
            self.agui.put_nowait(orjson.loads(await reader.read_all()))

        self.senders.add(sender)
        task = asyncio.create_task(read())
        self._reads.add(task)
        task.add_done_callback(self._reads.discard)


def _in_order(seen: list[str], wanted: tuple[str, ...]) -> bool:
    rest = iter(seen)
    return all(state in rest for state in wanted)


async def test_the_agent_joins_and_answers_typed_text_with_ag_ui_events_in_the_room(ollama):
    ollama.enqueue(ScriptedReply(text_reply(ANSWER)))
    name = f"citadel-test-{uuid.uuid4().hex[:8]}"  # no other worker of this server answers
    settings = Settings(
        livekit_url=URL, livekit_api_key=KEY, livekit_api_secret=SECRET, voice_agent_name=name
    )
    thread = f"thread_{uuid.uuid4().hex}"
    model = lambda: double_model(ollama)  # noqa: E731 - made on the services' loop
    async with voice_worker(model, settings, retrieval="off") as (services, home):
        grant = mint_room_token(
            api_key=KEY,
            api_secret=SECRET,
            owner="user_room",
            thread_id=thread,
            agent_name=name,
            ttl=600,
        )
        user = UserInRoom(rtc.Room())
        await user.room.connect(URL, grant.token)
        try:
            user.check_present()
            await user.agent_went("listening")  # its session has started: text is heard
            await user.room.local_participant.send_text(QUESTION, topic="lk.chat")
            events = await user.run_events()
            # Leaving while it speaks would keep only what was said (barge-in).
            await user.agent_went("listening", "speaking", "listening")
        finally:
            await user.room.disconnect()
        stored = await home.call(services.store.load(thread))

    assert events[0]["type"] == "RUN_STARTED" and events[-1]["type"] == "RUN_FINISHED"
    said = "".join(e["delta"] for e in events if e["type"] == "TEXT_MESSAGE_CONTENT")
    assert said == ANSWER
    [agent] = user.senders
    assert agent != "user_room"
    assert stored is not None and stored.owner == "user_room"
    assert [m["content"] for m in stored.messages] == [QUESTION, ANSWER]
