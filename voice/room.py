"""The AG-UI events of a room's voice runs, to the room: RoomIO carries the audio and the
transcripts (``lk.transcription``); the chat panel also wants the tool calls, sources and
state, so every event goes out on the text-stream topic ``ag-ui``, one JSON event per stream
(the web client reads them with ``useTextStream("ag-ui")``)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

logger = logging.getLogger("citadel.voice")

AGUI_TOPIC = "ag-ui"


class TextSender(Protocol):
    """What of ``rtc.LocalParticipant`` the mirror uses."""

    async def send_text(self, text: str, *, topic: str = "") -> Any: ...


class Room(Protocol):
    """What of ``rtc.Room`` the mirror uses. The local participant exists once the room is
    connected, which is before any run starts: it is looked up at each send."""

    @property
    def local_participant(self) -> TextSender: ...


class RoomMirror:
    """A :class:`voice.runtime_llm.Conversation`'s ``on_event`` for a room. Events are sent
    in order by one task: the runtime hands each event over before it passes the answer's
    words on to speech, and must not wait for the room to take it."""

    def __init__(self, room: Room) -> None:
        self._room = room
        self._events: asyncio.Queue[bytes] = asyncio.Queue()
        self._sender: asyncio.Task[None] | None = None

    async def __call__(self, event: bytes) -> None:
        self._events.put_nowait(event)
        if self._sender is None:
            self._sender = asyncio.create_task(self._send())

    async def aclose(self) -> None:
        """Stop sending: the job is over, and its room is gone with what was still queued."""
        if self._sender is not None:
            self._sender.cancel()
            await asyncio.wait({self._sender})

    async def _send(self) -> None:
        while True:
            event = await self._events.get()
            try:
                await self._room.local_participant.send_text(event.decode(), topic=AGUI_TOPIC)
            except ConnectionError as error:  # rtc.StreamError: this one is lost, not the rest
                logger.warning("an AG-UI event did not reach the room: %s", error)
