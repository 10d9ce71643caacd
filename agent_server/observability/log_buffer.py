"""The ring buffer behind ``GET /admin/logs``: this process's newest log lines, and readers
that follow new ones as they are logged.

Why it looks the way it does:

- **A handler on the root logger, one per app**, added by the app's lifespan
  (:func:`capture_logs`) and removed at shut-down: it works whether ``citadel serve``
  configured logging or a test started the app in-process. It keeps what reaches the root
  logger, so the process's level (``CITADEL_LOG_LEVEL``) decides what is kept; several apps in
  one process each keep every line of it.
- **Lines as data.** A record is kept as the JSON formatter's dict, redacted with the same
  secrets as stderr, each field at most :data:`MAX_FIELD_CHARS` (its head and tail), and at
  most ``CITADEL_LOG_BUFFER_LINES`` lines: the oldest go first.
- **Logging never waits for a reader.** A follower's matching lines wait in its own queue;
  past :data:`MAX_PENDING` of them, further lines are dropped for that follower and counted,
  and it is told how many.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from agent_server.observability.logs import JsonFormatter
from agent_server.observability.redaction import Redactor, secrets_of

if TYPE_CHECKING:
    from agent_server.config import Settings

MAX_FIELD_CHARS = 8192
MAX_PENDING = 1000  # lines waiting for one follower


@dataclass(frozen=True, slots=True)
class LogLine:
    level: int
    created: float  # epoch seconds
    fields: dict[str, Any]  # what the JSON formatter writes


@dataclass(frozen=True, slots=True)
class LogFilter:
    """Which lines a reader wants: at least ``level``, logged at ``since`` or later, and for
    the request, thread and run named (None: any)."""

    level: int = logging.NOTSET
    since: float | None = None
    request_id: str | None = None
    thread_id: str | None = None
    run_id: str | None = None

    def matches(self, line: LogLine) -> bool:
        fields = line.fields
        return (
            line.level >= self.level
            and (self.since is None or line.created >= self.since)
            and self.request_id in (None, fields.get("requestId"))
            and self.thread_id in (None, fields.get("threadId"))
            and self.run_id in (None, fields.get("runId"))
        )


class Follower:
    """One reader of new lines: those its filter takes, queued until it takes them. Lines
    are offered from any thread, under the buffer's lock."""

    def __init__(self, query: LogFilter, lock: threading.RLock) -> None:
        self.query = query
        self._lock = lock
        self._pending: deque[LogLine] = deque()
        self._dropped = 0
        self._ready = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()

    def offer(self, line: LogLine) -> None:
        if not self.query.matches(line):
            return
        if len(self._pending) < MAX_PENDING:
            self._pending.append(line)
        else:
            self._dropped += 1
        if threading.get_ident() == self._thread:
            self._ready.set()
        else:
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody reads
                self._loop.call_soon_threadsafe(self._ready.set)

    async def take(self) -> tuple[list[LogLine], int]:
        """The queued lines, once there are any, and how many were dropped after them (both
        may be empty after a wake-up for lines an earlier call took)."""
        await self._ready.wait()
        with self._lock:
            self._ready.clear()
            lines, dropped = list(self._pending), self._dropped
            self._pending.clear()
            self._dropped = 0
        return lines, dropped


class LogBuffer(logging.Handler):
    """The newest ``capacity`` lines, redacted by ``redactor``, and their followers."""

    def __init__(self, capacity: int, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor
        self._formatter = JsonFormatter(redactor)
        self._lines: deque[LogLine] = deque(maxlen=capacity)
        self._followers: set[Follower] = set()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fields = {key: _bounded(value) for key, value in self._formatter.fields(record).items()}
        except Exception:  # as any handler does: the caller's logging call must not fail
            self.handleError(record)
            return
        line = LogLine(record.levelno, record.created, fields)
        self._lines.append(line)
        for follower in self._followers:
            follower.offer(line)

    def recent(self, query: LogFilter, limit: int) -> list[dict[str, Any]]:
        """The newest ``limit`` lines ``query`` takes, oldest first."""
        with self.lock:
            lines = list(self._lines)
        return [line.fields for line in lines if query.matches(line)][-limit:]

    def follow(self, query: LogFilter, limit: int) -> tuple[list[dict[str, Any]], Follower]:
        """:meth:`recent` and a follower of the lines after them, none missed in between."""
        with self.lock:
            follower = Follower(query, self.lock)
            self._followers.add(follower)
            return self.recent(query, limit), follower

    def unfollow(self, follower: Follower) -> None:
        with self.lock:
            self._followers.discard(follower)


@contextlib.contextmanager
def capture_logs(settings: Settings) -> Iterator[LogBuffer]:
    """A buffer of ``CITADEL_LOG_BUFFER_LINES`` lines on the root logger, for the block."""
    buffer = LogBuffer(settings.log_buffer_lines, Redactor(secrets_of(settings)))
    root = logging.getLogger()
    root.addHandler(buffer)
    try:
        yield buffer
    finally:
        root.removeHandler(buffer)


def _bounded(value: Any) -> Any:
    """``value``, or its head and tail when its text is longer than :data:`MAX_FIELD_CHARS`
    (the end of a traceback is what says what happened)."""
    text = value if isinstance(value, str) else None
    if isinstance(value, list | dict):
        text = orjson.dumps(value).decode()
    if text is None or len(text) <= MAX_FIELD_CHARS:
        return value
    keep = MAX_FIELD_CHARS // 2
    return f"{text[:keep]}…[{len(text) - 2 * keep} characters cut]…{text[-keep:]}"
