"""The event bus: every run's events leave the worker that produces them, for the admin feed
and for clients that reconnect to another worker.

Two parts, both append-only logs read by cursor, so a reader can never slow a writer:

* the **feed**: every run's event batches (and notes such as ingestion jobs) from every
  worker, in one order, with ids a reader resumes after;
* the **run streams**: one per run, its events by sequence number, read by other workers.

:class:`LocalBus` keeps the feed in memory (one process serves every run, so there are no run
streams to read); :class:`~agent_server.runs.redis_bus.RedisBus` keeps both in Redis Streams.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Protocol

from agent_server.store.base import EventBatch

FEED_RUN = "run"


class BusUnavailable(RuntimeError):
    """The bus cannot be reached now; the caller retries or degrades."""


@dataclass(frozen=True, slots=True)
class FeedEntry:
    """One flush of a worker: consecutive events of one or more runs (``batches``), or a note
    (``kind`` other than "run", from ``owner``). Items of an entry are numbered across its
    batches: ``<id>.<i>``."""

    id: str  # "<ms>-<n>": ordered, a reader resumes after it
    kind: str
    worker: str
    batches: list[EventBatch] = field(default_factory=list)  # the AG-UI events, JSON
    owner: str = ""
    note: bytes = b""  # a note's JSON body


@dataclass(frozen=True, slots=True)
class RunEvents:
    """Consecutive events of a run read from its stream: ``events[i]`` is ``seq_from + i``."""

    seq_from: int
    events: list[bytes]


class EventBus(Protocol):
    worker: str

    async def publish(self, batches: list[EventBatch]) -> None:
        """Append run events to the feed (one entry) and the run streams (raises
        :class:`BusUnavailable`). Idempotent per batch: a batch sent again after an unclear
        failure is not repeated."""

    async def note(self, kind: str, body: bytes, owner: str = "") -> None:
        """Append a note (an ingestion job's progress, a voice session) to the feed."""

    async def read_feed(self, after: str, count: int, block: float) -> list[FeedEntry]:
        """Entries after the id ``after`` ("0-0": from the oldest kept), waiting up to
        ``block`` seconds for the first one."""

    async def feed_bounds(self) -> tuple[str, str]:
        """The ids of the oldest and the newest entry kept ("0-0" for an empty feed)."""

    async def read_run(
        self, thread_id: str, run_id: str, after_seq: int, block: float
    ) -> list[RunEvents] | None:
        """The run's events after ``after_seq``, waiting up to ``block`` seconds; None when
        the bus keeps no run streams (one process: every run is local)."""


def worker_name() -> str:
    """How this process appears on the feed and in claims: readable and unique per host."""
    return f"{socket.gethostname()}-{os.getpid()}"


def parse_feed_id(value: str) -> tuple[int, int]:
    """``"<ms>-<n>"`` -> ``(ms, n)``; raises ValueError on anything else."""
    ms, sep, n = value.partition("-")
    if not sep or not (ms + n).isascii() or not ms.isdigit() or not n.isdigit():
        raise ValueError(f"not a feed id of the form <ms>-<n>: {value!r}")
    if int(ms) >= 2**64 or int(n) >= 2**64:  # Redis stream ids are two 64-bit numbers
        raise ValueError(f"feed id out of range: {value!r}")
    return int(ms), int(n)


def feed_id_before(value: str) -> str:
    """The id just before ``value``: reading after it includes ``value`` itself."""
    ms, n = parse_feed_id(value)
    if n > 0:
        return f"{ms}-{n - 1}"
    return f"{ms - 1}-{2**64 - 1}" if ms > 0 else "0-0"


class LocalBus:
    """The feed of one process, in memory: the last ``retention`` entries."""

    def __init__(self, retention: int = 10_000) -> None:
        self.worker = worker_name()
        self._entries: deque[tuple[tuple[int, int], FeedEntry]] = deque(maxlen=retention)
        self._last = (0, 0)
        self._news = asyncio.Condition()

    async def publish(self, batches: list[EventBatch]) -> None:
        self._append(FEED_RUN, batches=list(batches))
        async with self._news:
            self._news.notify_all()

    async def note(self, kind: str, body: bytes, owner: str = "") -> None:
        self._append(kind, owner=owner, note=body)
        async with self._news:
            self._news.notify_all()

    def _append(self, kind: str, **fields: object) -> None:
        ms = int(time.time() * 1000)
        last_ms, last_n = self._last
        self._last = (ms, 0) if ms > last_ms else (last_ms, last_n + 1)
        entry_id = f"{self._last[0]}-{self._last[1]}"
        entry = FeedEntry(entry_id, kind, self.worker, **fields)  # type: ignore[arg-type]
        self._entries.append((self._last, entry))

    async def read_feed(self, after: str, count: int, block: float) -> list[FeedEntry]:
        position = parse_feed_id(after)
        found = self._after(position, count)
        if found or block <= 0:
            return found
        async with self._news:
            try:
                async with asyncio.timeout(block):
                    await self._news.wait_for(lambda: bool(self._after(position, 1)))
            except TimeoutError:
                return []
        return self._after(position, count)

    def _after(self, position: tuple[int, int], count: int) -> list[FeedEntry]:
        found: list[FeedEntry] = []
        for key, entry in reversed(self._entries):  # the live tail is what readers ask for
            if key <= position:
                break
            found.append(entry)
        found.reverse()
        return found[:count]

    async def feed_bounds(self) -> tuple[str, str]:
        if not self._entries:
            return "0-0", "0-0"
        return self._entries[0][1].id, self._entries[-1][1].id

    async def read_run(
        self, thread_id: str, run_id: str, after_seq: int, block: float
    ) -> list[RunEvents] | None:
        return None
