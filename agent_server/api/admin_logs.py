"""``GET /admin/logs``: this worker's newest log lines (the ring buffer of
:mod:`agent_server.observability.log_buffer`), filtered; with ``follow=true``, the lines
logged from then on too, as SSE, for administrators.

Each line is what the JSON log format writes, secrets redacted. A follower that reads too
slowly never slows logging: lines are dropped for it, and a line of its own says how many.
A followed stream holds one of the caller's stream slots, sends a keep-alive comment when
quiet, and ends after ``CITADEL_STREAM_MAX_DURATION`` like every stream: the client comes
back ``since`` the time of the last line it has.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Query
from pydantic import Field
from starlette.requests import HTTPConnection
from starlette.responses import Response

from agent_server.api.cursors import time_param
from agent_server.api.deps import ServicesDep
from agent_server.api.errors import refusals
from agent_server.api.guard import ADMIN
from agent_server.api.models import RestModel
from agent_server.api.streams import EventStreamResponse, StreamSlot
from agent_server.auth.principals import Principal
from agent_server.observability.log_buffer import LogBuffer, LogFilter
from agent_server.observability.logs import iso_time
from agent_server.services import Services
from protocol.errors import Refusal
from protocol.framing import SSE_KEEPALIVE, sse_frame

router = APIRouter(tags=["Administration"])

MAX_LIMIT = 10_000
LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}


class LogLines(RestModel):
    lines: list[dict[str, Any]] = Field(
        description="Oldest first, as the JSON log format writes them: time, level, logger,"
        " message, requestId, threadId and runId when bound, exception, extra fields"
    )


async def get_logs(connection: HTTPConnection) -> LogBuffer:
    return connection.app.state.logs


Admin = Annotated[Principal, Depends(ADMIN)]
Logs = Annotated[LogBuffer, Depends(get_logs)]


async def log_filter(
    level: Annotated[
        str | None, Query(max_length=10, description="The least level: debug … critical")
    ] = None,
    since: Annotated[
        str | None, Query(max_length=64, description="ISO-8601 time, inclusive")
    ] = None,
    request_id: Annotated[str | None, Query(alias="requestId", max_length=256)] = None,
    thread_id: Annotated[str | None, Query(alias="threadId", max_length=256)] = None,
    run_id: Annotated[str | None, Query(alias="runId", max_length=256)] = None,
) -> LogFilter:
    least = LEVELS.get(level.lower(), -1) if level else logging.NOTSET
    if least < 0:
        raise Refusal("invalid_input", f"level must be one of {', '.join(LEVELS)}")
    moment = time_param("since", since)
    return LogFilter(
        level=least,
        since=moment.timestamp() if moment else None,
        request_id=request_id,
        thread_id=thread_id,
        run_id=run_id,
    )


@router.get(
    "/admin/logs",
    response_model=LogLines,
    responses={
        200: {
            "description": "The lines as JSON; with `follow=true`, as SSE, one line per event",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
        **refusals("invalid_input", "too_many_streams"),
    },
)
async def recent_logs(
    services: ServicesDep,
    buffer: Logs,
    principal: Admin,
    query: Annotated[LogFilter, Depends(log_filter)],
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="The newest lines only")] = 1000,
    follow: bool = False,
) -> LogLines | Response:
    """This worker's newest log lines that pass the filters, oldest first: at least `level`,
    logged `since` then, for `requestId`, `threadId`, `runId`; `limit` of them at most.
    With `follow=true`, these and then every new line that passes, as SSE."""
    if not follow:
        return LogLines(lines=buffer.recent(query, limit))
    slot = StreamSlot(services, principal.user_id)
    return EventStreamResponse(_follow(services, buffer, query, limit), slot)


async def _follow(
    services: Services, buffer: LogBuffer, query: LogFilter, limit: int
) -> AsyncIterator[bytes]:
    settings = services.settings
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.stream_max_duration
    backlog, follower = buffer.follow(query, limit)
    try:
        if backlog:
            yield _frames(backlog)
        while True:
            try:
                async with asyncio.timeout(
                    min(settings.keepalive_interval, max(0.0, deadline - loop.time()))
                ):
                    lines, dropped = await follower.take()
            except TimeoutError:
                yield SSE_KEEPALIVE
            else:
                if lines or dropped:  # none: woken for lines an earlier take had
                    yield _frames([line.fields for line in lines], dropped)
            if loop.time() >= deadline:
                return  # the client comes back with a fresh credential, `since` its last line
    finally:
        buffer.unfollow(follower)


def _frames(lines: list[dict[str, Any]], dropped: int = 0) -> bytes:
    if dropped:
        lines = [*lines, _dropped_note(dropped)]
    return b"".join(sse_frame(orjson.dumps(line)) for line in lines)


def _dropped_note(count: int) -> dict[str, Any]:
    """Said in a line of its own, whatever the filters: the reader fell behind."""
    return {
        "time": iso_time(time.time()),
        "level": "WARNING",
        "logger": __name__,
        "message": f"{count} lines dropped here: this reader fell behind",
        "dropped": count,
    }
