"""Run streams on the wire: SSE framing, stream slots and the stream time limit.

A caller holds at most ``CITADEL_MAX_STREAMS_PER_USER`` open streams (429
``too_many_streams`` beyond), and a stream lasts at most ``CITADEL_STREAM_MAX_DURATION``:
then it ends without a terminal event, and the client reconnects with ``Last-Event-ID`` and
a fresh credential, so a revoked session does not keep a stream open. The run itself goes
on meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from agent_server.runs.eventlog import Batch
from agent_server.runs.service import RunStream
from agent_server.services import Services
from protocol.errors import Refusal
from protocol.framing import SSE_HEADERS, SSE_KEEPALIVE, SSE_MEDIA_TYPE

STREAM_TIME_LIMIT_CLOSE = 4408  # 4000 + 408: the socket lived CITADEL_STREAM_MAX_DURATION


def sse_batch(batch: Batch) -> bytes:
    """A batch as SSE frames, ``id: <runId>:<seq>`` on each event that has a number; an
    empty batch is a keep-alive comment. A batch of one (every token of a paced stream) is
    one formatting, not a join."""
    data = batch.data
    if not data:
        return SSE_KEEPALIVE
    head = b"id: %b:" % batch.run_id.encode()
    if len(data) == 1:
        return _frame(head, batch.seqs[0], data[0])
    return b"".join([_frame(head, seq, item) for seq, item in zip(batch.seqs, data, strict=True)])


def _frame(head: bytes, seq: int | None, data: bytes) -> bytes:
    return b"data: %b\n\n" % data if seq is None else b"%b%d\ndata: %b\n\n" % (head, seq, data)


class StreamSlot:
    """One of a caller's open-stream slots: taken on creation, freed by :meth:`release`
    (freeing twice frees once)."""

    def __init__(self, services: Services, owner: str) -> None:
        if not services.access.streams.acquire(owner):
            limit = services.settings.max_streams_per_user
            raise Refusal("too_many_streams", f"at most {limit} open streams per caller")
        self._streams = services.access.streams
        self._owner: str | None = owner

    def release(self) -> None:
        if self._owner is not None:
            self._streams.release(self._owner)
            self._owner = None


class EventStreamResponse(StreamingResponse):
    """``text/event-stream`` with the SSE headers, sent at once; holds a stream slot, if
    given, until the stream ends however it ends (even if it never starts)."""

    media_type = SSE_MEDIA_TYPE

    def __init__(
        self, body: AsyncIterator[bytes], slot: StreamSlot | None = None, status_code: int = 200
    ) -> None:
        super().__init__(body, status_code, media_type=SSE_MEDIA_TYPE, headers=SSE_HEADERS)
        self._slot = slot

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            if self._slot is not None:
                self._slot.release()


def sse_response(
    services: Services, owner: str, stream: RunStream, slot: StreamSlot | None = None
) -> Response:
    """The stream as SSE: in one piece when it has nothing live to wait for, else streamed
    in one of ``owner``'s slots (``slot``, or a new one), for at most the stream time
    limit."""
    if stream.live is None:
        if slot is not None:
            slot.release()
        body = b"".join(sse_batch(batch) for batch in stream.ready)
        return Response(body, media_type=SSE_MEDIA_TYPE, headers=SSE_HEADERS)
    if slot is None:
        slot = StreamSlot(services, owner)  # the stream has not started: nothing to undo
    return EventStreamResponse(_framed(stream, services.settings.stream_max_duration), slot)


async def _framed(stream: RunStream, max_duration: float) -> AsyncIterator[bytes]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max_duration
    async with contextlib.aclosing(aiter(stream)) as batches:
        async for batch in batches:
            yield sse_batch(batch)
            if loop.time() >= deadline:
                return  # the client resumes after the last event id, with a fresh credential
