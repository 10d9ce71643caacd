"""The events of one run, numbered, encoded once, readable by any number of followers.

Sequence numbers start at 1 and equal position + 1, so "everything after seq N" is a slice.
A follower that falls behind loses nothing: it reads what it missed from the log, in one
batch, and a client that reconnects with ``Last-Event-ID`` does the same.

The log keeps each event's JSON bytes, not event objects: a list of bytes costs the garbage
collector nothing to scan, and every face frames the same bytes its own way. The few events
a 0.0.59 client must see differently are encoded a second time on append.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import orjson

from protocol.events import TERMINAL_TYPES, Event
from protocol.framing import encode
from protocol.versions import WireVersion, downgrade


class RunEvent(NamedTuple):
    """One event as a follower gets it: its sequence number in the run (None: an event of
    no run, such as a hydration's, which cannot be resumed from) and its JSON."""

    seq: int | None
    data: bytes

    @property
    def event(self) -> Event:
        return orjson.loads(self.data)


@dataclass(frozen=True, slots=True)
class Batch:
    """Consecutive events of one run, as a follower gets them: ``data[i]`` is the JSON of the
    event numbered ``seqs[i]``. Empty: a quiet ``idle_timeout`` passed (time for a
    keep-alive); then ``run_id`` names what was followed (an observed thread's id).

    Two parallel sequences, not a list of pairs: a burst's batch holds thousands of events,
    and a range and a list of bytes cost the garbage collector nothing to scan."""

    run_id: str
    seqs: Sequence[int | None]
    data: list[bytes]

    @property
    def events(self) -> list[RunEvent]:
        """The events one by one, for faces that look at each."""
        return [RunEvent(seq, data) for seq, data in zip(self.seqs, self.data, strict=True)]

    def __len__(self) -> int:
        return len(self.data)


class EventLog:
    def __init__(self, thread_id: str, run_id: str, first_seq: int = 1) -> None:
        """``first_seq`` > 1: the run resumes a run whose earlier events are in the store."""
        self.thread_id = thread_id
        self.run_id = run_id
        self.first_seq = first_seq
        self.closed = False
        self._data: list[bytes] = []  # as a 1.0 client sees them
        self._legacy: dict[int, bytes | None] = {}  # index -> 0.0.59 form where it differs
        self._waiters: list[asyncio.Future[bool]] = []
        self.listeners: list[Callable[[EventLog], None]] = []  # told of appends and the close
        self.followers = 0  # connections following now

    @property
    def last_seq(self) -> int:
        return self.first_seq - 1 + len(self._data)

    def append(self, event: Event) -> bytes:
        """Number and keep ``event``; returns its JSON."""
        data = _kept(encode(event))
        self._add(event, data)
        return data

    def append_encoded(self, data: bytes) -> bool:
        """Keep an event another worker encoded (a mirror of its log); True if it ends the run."""
        event = orjson.loads(data)
        self._add(event, data)
        return event.get("type") in TERMINAL_TYPES

    def _add(self, event: Event, data: bytes) -> None:
        if self.closed:
            raise RuntimeError(f"event log of run {self.run_id} is closed")
        legacy = downgrade(event)
        if legacy is not event:
            self._legacy[len(self._data)] = None if legacy is None else _kept(encode(legacy))
        self._data.append(data)
        self._wake()

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

    def encoded(self, start: int, end: int) -> list[bytes]:
        """The JSON of events ``start:end`` (positions in this log, 0-based), as stored."""
        return self._data[start:end]

    def batch(self, start: int, end: int, version: WireVersion) -> Batch:
        """Events ``start:end`` (positions in this log, 0-based) for a client of ``version``."""
        seqs = range(self.first_seq + start, self.first_seq + end)
        found = self._data[start:end]
        if version is WireVersion.V1 or not self._legacy:
            return Batch(self.run_id, seqs, found)
        legacy, kept_seqs, kept = self._legacy, [], []
        for index, seq, data in zip(range(start, end), seqs, found, strict=True):
            data = legacy.get(index, data)
            if data is not None:
                kept_seqs.append(seq)
                kept.append(data)
        return Batch(self.run_id, kept_seqs, kept)

    async def follow(
        self,
        after_seq: int = 0,
        version: WireVersion = WireVersion.V1,
        *,
        idle_timeout: float | None = None,
        min_interval: float = 0.0,
    ) -> AsyncIterator[Batch]:
        """Batches of events after ``after_seq`` until the log closes; an empty batch means
        ``idle_timeout`` passed with nothing new (time for a keep-alive). Events before
        ``first_seq`` are not here: they are the store's.

        ``min_interval`` paces batches like Nagle's algorithm: a batch that would follow the
        previous one sooner waits out the interval and takes everything that came meanwhile.
        Streams slower than one event per interval (every LLM stream) are never delayed; a
        burst costs one write per interval instead of one per event."""
        # One generator, not two: every layer costs each batch a resumption.
        self.followers += 1
        try:
            loop = asyncio.get_running_loop()
            position = max(after_seq - self.first_seq + 1, 0)
            last_batch = -min_interval
            while True:
                end = len(self._data)
                if position < end:
                    early = last_batch + min_interval - loop.time()
                    if early > 0 and not self.closed:
                        await asyncio.sleep(early)
                        end = len(self._data)
                    batch = self.batch(position, end, version)
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
                    yield Batch(self.run_id, (), [])
        finally:
            self.followers -= 1


def _kept(data: bytes) -> bytes:
    """``data`` in a bytes object of its own size. orjson's output keeps the 4 KB buffer it
    was written into: kept for minutes, ten thousand events would hold 40 MB (measured, 4,097
    bytes each with orjson 3.13), and the memory traffic slowed every event by a third."""
    return b"%b" % data


def _expire(waiter: asyncio.Future[bool]) -> None:
    if not waiter.done():
        waiter.set_result(False)
