"""A user's threads: list (newest first), read, rename, delete. Someone else's thread is 404."""

from __future__ import annotations

import contextlib
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import Field
from starlette.responses import Response

from agent_server.api.cursors import decode_dated_cursor, encode_cursor
from agent_server.api.deps import ServicesDep, actor
from agent_server.api.errors import refusals
from agent_server.api.guard import CALLER
from agent_server.api.models import RestBody, RestModel
from agent_server.auth.principals import Principal
from agent_server.store.base import ThreadSummary
from protocol.errors import Refusal
from protocol.input import Id

router = APIRouter(tags=["Threads"])
Caller = Annotated[Principal, Depends(CALLER)]
ThreadId = Annotated[str, Path(pattern=r"^[\x21-\x7e]{1,256}$")]

MAX_PAGE = 100
MAX_TITLE = 200


class ThreadItem(RestModel):
    id: str
    title: str
    message_count: int
    created_at: datetime
    updated_at: datetime


class ThreadPage(RestModel):
    threads: list[ThreadItem]
    next_cursor: str | None = Field(None, description="Absent on the last page")


class Thread(RestModel):
    id: str
    title: str
    state: Any = None
    messages: list[dict[str, Any]]
    pending_interrupts: list[str]


class Rename(RestBody):
    title: str = Field(max_length=MAX_TITLE)


class Renamed(RestModel):
    id: Id
    title: str


@router.get(
    "/threads",
    response_model_exclude_none=True,
    responses=refusals("invalid_input", "invalid_cursor", "storage_unavailable"),
)
async def list_threads(
    services: ServicesDep,
    principal: Caller,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 20,
    cursor: Annotated[str | None, Query(max_length=1000)] = None,
) -> ThreadPage:
    """The caller's threads, most recently updated first; `nextCursor` pages on."""
    before = _decode_cursor(cursor)
    page = await services.store.list_threads(principal.user_id, limit + 1, before)
    threads = [_item(item) for item in page[:limit]]
    if len(page) > limit:
        last = page[limit - 1]
        return ThreadPage(
            threads=threads, next_cursor=encode_cursor(last.updated_at.isoformat(), last.thread_id)
        )
    return ThreadPage(threads=threads)


@router.get("/threads/{thread_id}", responses=refusals("thread_not_found", "storage_unavailable"))
async def get_thread(thread_id: ThreadId, services: ServicesDep, principal: Caller) -> Thread:
    """The thread's messages, shared state and unanswered interrupts."""
    record = await services.store.load(thread_id)
    if record is None or record.owner != principal.user_id:
        raise _not_found(thread_id)
    return Thread(
        id=record.thread_id,
        title=record.title,
        state=record.state,
        messages=record.messages,
        pending_interrupts=[item.id for item in record.pending_interrupts],
    )


@router.patch(
    "/threads/{thread_id}",
    responses=refusals("invalid_input", "thread_not_found", "storage_unavailable"),
)
async def rename_thread(
    thread_id: ThreadId, body: Rename, request: Request, services: ServicesDep, principal: Caller
) -> Renamed:
    """Give the thread a title (audited)."""
    renamed = await services.store.rename_thread(
        thread_id, principal.user_id, body.title, actor(request, principal)
    )
    if not renamed:
        raise _not_found(thread_id)
    return Renamed(id=thread_id, title=body.title)


@router.delete(
    "/threads/{thread_id}",
    status_code=204,
    response_class=Response,
    responses=refusals("thread_not_found", "storage_unavailable"),
)
async def delete_thread(
    thread_id: ThreadId, request: Request, services: ServicesDep, principal: Caller
) -> Response:
    """Delete the thread with its runs and events (audited); a run in progress is stopped
    first."""
    owner = principal.user_id
    if services.runs.manager.active_run(thread_id) is not None:
        with contextlib.suppress(Refusal):  # someone else's run, or it ended meanwhile
            await services.runs.stop(owner, thread_id)
    if not await services.store.delete_thread(thread_id, owner, actor(request, principal)):
        raise _not_found(thread_id)
    return Response(status_code=204)


def _not_found(thread_id: str) -> Refusal:
    return Refusal("thread_not_found", f"no thread {thread_id!r}")


def _item(item: ThreadSummary) -> ThreadItem:
    return ThreadItem(
        id=item.thread_id,
        title=item.title,
        message_count=item.message_count,
        created_at=item.created_at,
        updated_at=item.updated_at,
    )


def _decode_cursor(cursor: str | None) -> tuple[datetime, str] | None:
    if cursor is None:
        return None
    found = decode_dated_cursor(cursor, 2)
    if found is None:
        raise Refusal("invalid_cursor", "cursor is not one this server issued")
    updated_at, (thread_id,) = found
    return updated_at, thread_id
