"""What a room's participants receive on the ``ag-ui`` text-stream topic: RoomMirror on a
TEST DOUBLE of the room's local participant (no LiveKit server can run here)."""

from __future__ import annotations

import asyncio

import orjson
from livekit import rtc

from voice.room import RoomMirror

PATIENCE = 10.0  # a wait that fails instead of hanging


class LocalParticipantDouble:
    """A TEST DOUBLE of ``rtc.LocalParticipant.send_text``: each text stream sent is kept in
    ``sent`` as (topic, text); sends wait while ``open`` is clear; a text in ``failing``
    raises ``rtc.StreamError``, as when the room goes away mid-send."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []
        self.open = asyncio.Event()
        self.open.set()
        self.failing: set[str] = set()
        self._changed = asyncio.Condition()

    async def send_text(self, text: str, *, topic: str = "") -> None:
        await self.open.wait()
        if text in self.failing:
            raise rtc.StreamError("the room went away")
        async with self._changed:
            self.sent.append((topic, text))
            self._changed.notify_all()

    async def received(self, count: int) -> None:
        async with asyncio.timeout(PATIENCE), self._changed:
            await self._changed.wait_for(lambda: len(self.sent) >= count)


class RoomDouble:
    """A TEST DOUBLE of ``rtc.Room``: only its local participant."""

    def __init__(self) -> None:
        self.local_participant = LocalParticipantDouble()


def event(n: int) -> bytes:
    return orjson.dumps({"type": "TEXT_MESSAGE_CONTENT", "messageId": "m1", "delta": f"w{n}"})


async def test_each_event_is_one_text_stream_on_the_ag_ui_topic_in_order():
    room = RoomDouble()
    mirror = RoomMirror(room)
    events = [event(n) for n in range(20)]
    for data in events:
        await mirror(data)
    await room.local_participant.received(len(events))
    assert room.local_participant.sent == [("ag-ui", data.decode()) for data in events]
    await mirror.aclose()


async def test_the_runtime_does_not_wait_for_the_room_to_take_an_event():
    room = RoomDouble()
    room.local_participant.open.clear()
    mirror = RoomMirror(room)
    async with asyncio.timeout(PATIENCE):  # would hang if a call waited for its send
        for n in range(3):
            await mirror(event(n))
    assert room.local_participant.sent == []
    room.local_participant.open.set()
    await room.local_participant.received(3)
    await mirror.aclose()


async def test_an_event_the_room_fails_to_take_is_lost_not_the_ones_after_it():
    room = RoomDouble()
    room.local_participant.failing.add(event(1).decode())
    mirror = RoomMirror(room)
    for n in range(3):
        await mirror(event(n))
    await room.local_participant.received(2)
    assert room.local_participant.sent == [
        ("ag-ui", event(0).decode()),
        ("ag-ui", event(2).decode()),
    ]
    await mirror.aclose()


async def test_a_closed_mirror_sends_nothing_more():
    room = RoomDouble()
    room.local_participant.open.clear()
    mirror = RoomMirror(room)
    await mirror(event(0))
    await mirror.aclose()  # the queued event is dropped: the room is gone
    room.local_participant.open.set()
    await mirror.aclose()  # closing twice is harmless
    assert room.local_participant.sent == []
