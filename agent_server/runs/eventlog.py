"""The events of one run, numbered, encoded once, readable by any number of followers.

Sequence numbers start at 1 and equal position + 1, so "everything after seq N" is a slice.
A follower that falls behind loses nothing: it reads what it missed from the log, in one
batch, and a client that reconnects with ``Last-Event-ID`` does the same.

The log keeps finished SSE frames (``id: <runId>:<seq>`` included), not event objects: a
list of bytes costs the garbage collector nothing to scan and is written to a socket as is.
The few events a 0.0.59 client must see differently are framed a second time on append.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import orjson

from protocol.events import TERMINAL_TYPES, Event
from protocol.framing import encode
from protocol.versions import WireVersion, downgrade

_DATA = b"\ndata: "
_END = b"\n\n"


class EventLog:
    def __init__(self, thread_id: str, run_id: str, first_seq: int = 1) -> None:
        """``first_seq`` > 1: the run resumes a run whose earlier events are in the store."""
        self.thread_id = thread_id
        self.run_id = run_id
        self.first_seq = first_seq
        self.closed = False
        self._frames: list[bytes] = []  # as a 1.0 client sees them
        self._legacy: dict[int, bytes | None] = {}  # index -> 0.0.59 frame where it differs
        self._id_prefix = f"id: {run_id}:".encode()
        self._waiters: list[asyncio.Future[bool]] = []
        self.listeners: list[Callable[[EventLog], None]] = []  # told of appends and the close
        self.followers = 0  # connections following now

    @property
    def last_seq(self) -> int:
        return self.first_seq - 1 + len(self._frames)

    def append(self, event: Event) -> bytes:
        """Number, frame and keep ``event``; returns its SSE frame."""
        return self._add(event, encode(event))

    def append_encoded(self, data: bytes) -> bool:
        """Keep an event another worker encoded (a mirror of its log); True if it ends the run."""
        event = orjson.loads(data)
        self._add(event, data)
        return event.get("type") in TERMINAL_TYPES

    def _add(self, event: Event, data: bytes) -> bytes:
        if self.closed:
            raise RuntimeError(f"event log of run {self.run_id} is closed")
        index = len(self._frames)
        head = b"%s%d%s" % (self._id_prefix, self.first_seq + index, _DATA)
        frame = head + data + _END
        self._frames.append(frame)
        legacy = downgrade(event)
        if legacy is not event:
            self._legacy[index] = None if legacy is None else head + encode(legacy) + _END
        self._wake()
        return frame

    def close(self) -> None:
        """No more events (until a resume of the same run reopens it)."""
        self.closed = True
        self._wake()

    def reopen(self) -> None:
        self.closed = False

    def _wake(self) -> None:
        for listener in self.listeners:
            listener(self)
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(True)

    def frames(
        self, start: int, end: int, version: WireVersion, *, sse: bool = True
    ) -> list[bytes]:
        """Frames ``start:end`` (positions in this log, 0-based) for a client of ``version``:
        SSE frames, or the bare JSON of each event (one WebSocket text frame each) when
        ``sse`` is false."""
        frames = self._frames[start:end]
        if version is WireVersion.LEGACY and self._legacy:
            shaped = (self._legacy.get(index, frame) for index, frame in enumerate(frames, start))
            frames = [frame for frame in shaped if frame is not None]
        if not sse:
            frames = [frame[frame.index(_DATA) + len(_DATA) : -len(_END)] for frame in frames]
        return frames

    async def follow(
        self,
        after_seq: int = 0,
        version: WireVersion = WireVersion.V1,
        *,
        sse: bool = True,
        idle_timeout: float | None = None,
        min_interval: float = 0.0,
    ) -> AsyncIterator[list[bytes]]:
        """Batches of frames after ``after_seq`` until the log closes; an empty batch means
        ``idle_timeout`` passed with nothing new (time for a keep-alive). Events before
        ``first_seq`` are not here: they are the store's.

        ``min_interval`` paces batches like Nagle's algorithm: a batch that would follow the
        previous one sooner waits out the interval and takes everything that came meanwhile.
        Streams slower than one event per interval (every LLM stream) are never delayed; a
        burst costs one write per interval instead of one per event."""
        self.followers += 1
        try:
            async for batch in self._follow(after_seq, version, sse, idle_timeout, min_interval):
                yield batch
        finally:
            self.followers -= 1

    async def _follow(
        self,
        after_seq: int,
        version: WireVersion,
        sse: bool,
        idle_timeout: float | None,
        min_interval: float,
    ) -> AsyncIterator[list[bytes]]:
        loop = asyncio.get_running_loop()
        position = max(after_seq - self.first_seq + 1, 0)
        last_batch = -min_interval
        while True:
            end = len(self._frames)
            if position < end:
                early = last_batch + min_interval - loop.time()
                if early > 0 and not self.closed:
                    await asyncio.sleep(early)
                    end = len(self._frames)
                batch = self.frames(position, end, version, sse=sse)
                position, last_batch = end, loop.time()
                if batch:
                    yield batch
                continue
            if self.closed:
                return
            waiter: asyncio.Future[bool] = loop.create_future()
            self._waiters.append(waiter)
            timer = None
            if idle_timeout is not None:
                timer = loop.call_later(idle_timeout, _expire, waiter)
            try:
                news = await waiter
            finally:
                if timer is not None:
                    timer.cancel()
            if not news:
                yield []


def _expire(waiter: asyncio.Future[bool]) -> None:
    if not waiter.done():
        waiter.set_result(False)
