"""One small HTTP/1.1 + SSE client for every server, so the client's cost is the same and low.

Raw asyncio streams: POST a JSON body, read the (chunked) body in large blocks, undo the
chunked encoding, split SSE frames on ``b"\\n\\n"`` and hand complete frames to the caller.
Frames are parsed as JSON only when asked (validation, delay stamps).
"""

from __future__ import annotations

import asyncio
import resource
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from protocol.events import EventType
from protocol.verifier import verify_events

READ_SIZE = 256 * 1024


def run_input(
    prompt: str | list[dict[str, Any]],
    *,
    thread_id: str | None = None,
    run_id: str | None = None,
) -> bytes:
    """A RunAgentInput from a 1.0 client: ``prompt`` as the user turn, or the messages given
    (a thread's history); a fresh thread and run unless named."""
    messages = [user_message(prompt)] if isinstance(prompt, str) else prompt
    return orjson.dumps(
        {
            "threadId": thread_id or uuid.uuid4().hex,
            "runId": run_id or uuid.uuid4().hex,
            "protocolVersion": "1.0",
            "state": {},
            "messages": messages,
            "tools": [],
            "context": [],
            "forwardedProps": {},
        }
    )


def user_message(text: str) -> dict[str, Any]:
    return {"id": uuid.uuid4().hex, "role": "user", "content": text}


class BodyReader:
    """Incremental HTTP response parser: head, then a chunked (or sized) body cut into frames."""

    def __init__(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self.done = False
        self._head = b""
        self._chunked: bool | None = None  # None until the head is read
        self._unread = -1  # body bytes still to come, when the head gives a Content-Length
        self._raw = bytearray()  # received, not yet de-chunked
        self._body = bytearray()  # de-chunked, not yet cut into frames

    def feed(self, data: bytes) -> list[bytes]:
        """Complete SSE frames (without the blank line) found in ``data``."""
        if self._chunked is None:
            self._head += data
            head, sep, data = self._head.partition(b"\r\n\r\n")
            if not sep:
                return []
            self._read_head(head)
        if self._chunked:
            self._raw += data
            self._dechunk()
        else:
            self._body += data
            self._unread -= len(data)
            self.done = self._unread == 0
        *frames, rest = self._body.split(b"\n\n")
        self._body = bytearray(rest)
        return [bytes(frame) for frame in frames]

    def _read_head(self, head: bytes) -> None:
        status_line, *lines = head.decode("latin-1").split("\r\n")
        self.status = int(status_line.split()[1])
        for line in lines:
            name, _, value = line.partition(":")
            self.headers[name.strip().lower()] = value.strip()
        self._chunked = "chunked" in self.headers.get("transfer-encoding", "")
        if not self._chunked and "content-length" in self.headers:
            self._unread = int(self.headers["content-length"])
            self.done = self._unread == 0

    def _dechunk(self) -> None:
        raw, position = self._raw, 0
        while True:
            end = raw.find(b"\r\n", position)
            if end < 0:
                break
            size = int(raw[position:end].split(b";", 1)[0], 16)
            if size == 0:
                self.done = True
                break
            start = end + 2
            if len(raw) < start + size + 2:
                break
            self._body += raw[start : start + size]
            position = start + size + 2
        del raw[:position]


@dataclass
class Stream:
    """What one POST returned."""

    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    frames: int = 0  # SSE frames carrying data
    bytes: int = 0
    elapsed: float = 0.0  # from connecting to the end of the body
    kept: list[bytes] = field(default_factory=list)


async def post_sse(
    port: int,
    body: bytes,
    *,
    path: str = "/agui",
    host: str = "127.0.0.1",
    keep: bool = False,
    on_frames: Callable[[list[bytes], int], None] | None = None,
    method: str = "POST",
) -> Stream:
    """POST ``body`` (or send it with ``method``) and read the SSE answer to its end.
    ``on_frames(frames, arrival_ns)`` sees every block of complete frames as it arrives;
    ``keep`` keeps all frames in the result."""
    result = Stream()
    start = time.perf_counter()
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(
            f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"Accept: text/event-stream\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        parser = BodyReader()
        while not parser.done:
            data = await reader.read(READ_SIZE)
            if not data:
                break
            arrived = time.monotonic_ns()
            result.bytes += len(data)
            frames = parser.feed(data)
            if frames:
                result.frames += sum(1 for f in frames if f.startswith(b"data:") or b"\ndata:" in f)
                if keep:
                    result.kept += frames
                if on_frames is not None:
                    on_frames(frames, arrived)
        result.elapsed = time.perf_counter() - start
        result.status, result.headers = parser.status, parser.headers
        return result
    finally:
        writer.close()


def frame_data(frame: bytes) -> bytes:
    """The data of one SSE frame: its ``data:`` lines joined by LF."""
    lines = frame.split(b"\n")
    return b"\n".join(line[5:].removeprefix(b" ") for line in lines if line.startswith(b"data:"))


def frame_event(frame: bytes) -> Any:
    return orjson.loads(frame_data(frame))


def check_agui(stream: Stream, deltas: int) -> list[str]:
    """Why ``stream`` is not a correct AG-UI 1.0 answer of ``deltas`` text deltas (empty: it is)."""
    problems = []
    if stream.status != 200:
        problems.append(f"HTTP {stream.status}")
    if not stream.headers.get("content-type", "").startswith("text/event-stream"):
        problems.append(f"content type {stream.headers.get('content-type')!r}")
    events = [frame_event(frame) for frame in stream.kept if frame_data(frame)]
    problems += [str(finding) for finding in verify_events(events)]
    content = [e for e in events if e.get("type") == EventType.TEXT_MESSAGE_CONTENT]
    if len(content) != deltas:
        problems.append(f"{len(content)} TEXT_MESSAGE_CONTENT events, expected {deltas}")
    if events and events[0].get("protocolVersion") != "1.0":
        problems.append("RUN_STARTED does not declare protocolVersion 1.0")
    return problems


def raise_fd_limit() -> int:
    """Raise the soft file-descriptor limit to the hard one; returns the new limit."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def new_loop() -> asyncio.AbstractEventLoop:
    """The client's event loop: uvloop when installed (it is, with uvicorn[standard])."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()
