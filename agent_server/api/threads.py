"""A user's threads: list (newest first), read, rename, delete. Someone else's thread is 404."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from agent_server.api.http import (
    actor_of,
    decode_dated_cursor,
    encode_cursor,
    read_json,
    services_of,
)
from agent_server.auth.principals import principal_of
from agent_server.store.base import ThreadSummary
from protocol.input import InputError

MAX_PAGE = 100
MAX_TITLE = 200


async def list_threads(request: Request) -> Response:
    services = services_of(request)
    limit = _limit(request.query_params.get("limit", "20"))
    before = _decode_cursor(request.query_params.get("cursor"))
    owner = principal_of(request).user_id
    page = await services.store.list_threads(owner, limit + 1, before)
    body: dict[str, Any] = {"threads": [_summary(item) for item in page[:limit]]}
    if len(page) > limit:
        body["nextCursor"] = _encode_cursor(page[limit - 1])
    return JSONResponse(body)


async def get_thread(request: Request) -> Response:
    services = services_of(request)
    thread_id = request.path_params["thread_id"]
    record = await services.store.load(thread_id)
    if record is None or record.owner != principal_of(request).user_id:
        raise _not_found(thread_id)
    return JSONResponse(
        {
            "id": record.thread_id,
            "title": record.title,
            "state": record.state,
            "messages": record.messages,
            "pendingInterrupts": [item.id for item in record.pending_interrupts],
        }
    )


async def rename_thread(request: Request) -> Response:
    services = services_of(request)
    thread_id = request.path_params["thread_id"]
    data = await read_json(request, services.settings.max_body_bytes)
    title = data.get("title") if isinstance(data, dict) else None
    if not isinstance(title, str) or len(title) > MAX_TITLE:
        raise InputError(422, "invalid_input", f"title must be a string of at most {MAX_TITLE}")
    owner = principal_of(request).user_id
    if not await services.store.rename_thread(thread_id, owner, title, actor_of(request)):
        raise _not_found(thread_id)
    return JSONResponse({"id": thread_id, "title": title})


async def delete_thread(request: Request) -> Response:
    """Deletes messages, runs and events; a run in progress is stopped first."""
    services = services_of(request)
    thread_id = request.path_params["thread_id"]
    owner = principal_of(request).user_id
    active = services.runs.active_run(thread_id)
    if active is not None and active.owner == owner:
        await services.runs.stop(thread_id, owner)
    if not await services.store.delete_thread(thread_id, owner, actor_of(request)):
        raise _not_found(thread_id)
    return Response(status_code=204)


def _not_found(thread_id: str) -> InputError:
    return InputError(404, "thread_not_found", f"no thread {thread_id!r}")


def _limit(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= MAX_PAGE:
        raise InputError(422, "invalid_input", f"limit must be an integer from 1 to {MAX_PAGE}")
    return int(value)


def _summary(item: ThreadSummary) -> dict[str, Any]:
    return {
        "id": item.thread_id,
        "title": item.title,
        "messageCount": item.message_count,
        "createdAt": item.created_at.isoformat(),
        "updatedAt": item.updated_at.isoformat(),
    }


def _encode_cursor(item: ThreadSummary) -> str:
    return encode_cursor(item.updated_at.isoformat(), item.thread_id)


def _decode_cursor(cursor: str | None) -> tuple[datetime, str] | None:
    if cursor is None:
        return None
    found = decode_dated_cursor(cursor, 2)
    if found is None:
        raise InputError(422, "invalid_cursor", "cursor is not one this server issued")
    updated_at, (thread_id,) = found
    return updated_at, thread_id


routes = [
    Route("/threads", list_threads, methods=["GET"]),
    Route("/threads/{thread_id}", get_thread, methods=["GET"]),
    Route("/threads/{thread_id}", rename_thread, methods=["PATCH"]),
    Route("/threads/{thread_id}", delete_thread, methods=["DELETE"]),
]
