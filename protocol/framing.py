"""Encoding and framing of AG-UI events for SSE and WebSocket.

An event is encoded to JSON exactly once; the SSE frame and the WebSocket text frame are
built from those bytes. SSE frames use LF only: both real TypeScript clients split frames on
``\\n\\n`` and never dispatch a CRLF-framed stream.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson

from protocol.events import Event

SSE_KEEPALIVE = b": keep-alive\n\n"
SSE_MEDIA_TYPE = "text/event-stream"
SSE_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",  # nginx would otherwise buffer the whole stream
}


def encode(event: Event) -> bytes:
    return orjson.dumps(event)


def sse_frame(data: bytes, event_id: str | None = None) -> bytes:
    if event_id is None:
        return b"data: " + data + b"\n\n"
    return b"id: " + event_id.encode() + b"\ndata: " + data + b"\n\n"


def event_id(run_id: str, seq: int) -> str:
    """The SSE id of an event: enough for a reconnecting client to say what it has seen."""
    return f"{run_id}:{seq}"


MAX_SEQ = 2**31 - 1  # a run's events are numbered 1..MAX_SEQ


def parse_event_id(value: str) -> tuple[str, int]:
    """Inverse of :func:`event_id`; run ids may themselves contain colons."""
    run_id, sep, seq = value.strip().rpartition(":")
    if not sep or not run_id or not seq.isascii() or not seq.isdigit() or int(seq) > MAX_SEQ:
        raise ValueError(f"not an event id of the form <runId>:<seq>: {value!r}")
    return run_id, int(seq)


@dataclass(frozen=True, slots=True)
class SSEMessage:
    data: str
    id: str | None = None


class SSEDecoder:
    """Incremental SSE parsing the way the AG-UI clients do it: frames split on LF LF only."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[SSEMessage]:
        self._buffer += chunk
        *blocks, self._buffer = self._buffer.split(b"\n\n")
        return [message for block in blocks if (message := _parse_block(block)) is not None]


def _parse_block(block: bytes) -> SSEMessage | None:
    data_lines: list[str] = []
    message_id = None
    for line in block.decode().split("\n"):
        if line.startswith(":") or not line:
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "data":
            data_lines.append(value)
        elif field == "id":
            message_id = value
    return SSEMessage("\n".join(data_lines), message_id) if data_lines else None


def parse_sse(stream: bytes) -> list[SSEMessage]:
    """The messages of a complete recorded SSE body."""
    return SSEDecoder().feed(stream + b"\n\n")


async def parse_sse_stream(chunks: AsyncIterable[bytes]) -> AsyncIterator[dict[str, Any]]:
    """Decoded events from a streaming SSE body, as they arrive."""
    decoder = SSEDecoder()
    async for chunk in chunks:
        for message in decoder.feed(chunk):
            yield orjson.loads(message.data)
