"""The events of one run, numbered, encoded once, readable by any number of followers.

Sequence numbers start at 1 and equal position + 1, so "everything after seq N" is a slice.
A follower that falls behind loses nothing: it reads what it missed from the log, in one
batch, and a client that reconnects with ``Last-Event-ID`` does the same.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from protocol.events import Event
from protocol.framing import encode, event_id, sse_frame
from protocol.versions import WireVersion, downgrade


class LogEntry:
    __slots__ = ("_legacy", "event", "json", "seq", "sse")

    def __init__(self, run_id: str, seq: int, event: Event) -> None:
        self.seq = seq
        self.event = event
        self.json = encode(event)
        self.sse = sse_frame(self.json, event_id(run_id, seq))
        self._legacy: tuple[bytes, bytes] | None = None

    def encoded(self, run_id: str, version: WireVersion) -> tuple[bytes, bytes] | None:
        """``(json, sse frame)`` as a client of ``version`` must see it, or None to skip."""
        if version is WireVersion.V1:
            return self.json, self.sse
        if self._legacy is None:
            legacy = downgrade(self.event)
            if legacy is None:
                return None
            if legacy is self.event:
                self._legacy = (self.json, self.sse)
            else:
                data = encode(legacy)
                self._legacy = (data, sse_frame(data, event_id(run_id, self.seq)))
        return self._legacy


class EventLog:
    def __init__(self, thread_id: str, run_id: str) -> None:
        self.thread_id = thread_id
        self.run_id = run_id
        self.entries: list[LogEntry] = []
        self.closed = False
        self._wakeup: asyncio.Future[None] | None = None

    @property
    def last_seq(self) -> int:
        return len(self.entries)

    def append(self, event: Event) -> LogEntry:
        if self.closed:
            raise RuntimeError(f"event log of run {self.run_id} is closed")
        entry = LogEntry(self.run_id, len(self.entries) + 1, event)
        self.entries.append(entry)
        self._wake()
        return entry

    def close(self) -> None:
        """No more events (until a resume of the same run reopens it)."""
        self.closed = True
        self._wake()

    def reopen(self) -> None:
        self.closed = False

    def _wake(self) -> None:
        if self._wakeup is not None:
            if not self._wakeup.done():
                self._wakeup.set_result(None)
            self._wakeup = None

    async def follow(
        self, after_seq: int = 0, idle_timeout: float | None = None
    ) -> AsyncIterator[list[LogEntry]]:
        """Batches of entries after ``after_seq`` until the log closes; an empty batch means
        ``idle_timeout`` passed with nothing new (time for a keep-alive)."""
        position = max(after_seq, 0)
        while True:
            if position < len(self.entries):
                batch = self.entries[position:]
                position = len(self.entries)
                yield batch
                continue
            if self.closed:
                return
            if self._wakeup is None:
                self._wakeup = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait_for(asyncio.shield(self._wakeup), idle_timeout)
            except TimeoutError:
                yield []
