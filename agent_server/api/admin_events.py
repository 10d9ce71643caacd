"""``GET /admin/events``: every run's events from every worker as they happen, as SSE or over
a WebSocket, for administrators.

The first item (kind "connected") says where the reader starts. Each other item wraps one
AG-UI event with its run, thread, user and worker (or is a note, such as an ingestion job's
progress), under an id a client resumes after (``Last-Event-ID`` or ``after``); ``since``
replays from a point in time. Filters: ``thread``, ``run``, ``user``,
``types`` (event types), ``kinds`` (run, ingest, ...).

Every reader reads the feed by cursor, so a slow one never slows a run. One with a page or
more unread, the oldest more than ``CITADEL_ADMIN_FEED_MAX_LAG`` seconds older than the
newest, gets a ``resync`` item and continues from the newest entry: the skipped part stays
replayable (``after`` the id it last saw) for as long as the feed keeps it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Header, Query
from starlette.responses import Response
from starlette.websockets import WebSocket, WebSocketDisconnect

from agent_server.api.deps import ServicesDep
from agent_server.api.errors import refusals
from agent_server.api.guard import ADMIN
from agent_server.api.streams import STREAM_TIME_LIMIT_CLOSE, EventStreamResponse
from agent_server.auth.principals import Principal
from agent_server.runs.bus import (
    FEED_RUN,
    BusUnavailable,
    EventBus,
    FeedEntry,
    feed_id_before,
    parse_feed_id,
)
from agent_server.services import Services
from agent_server.store.base import EventBatch
from protocol.errors import Refusal
from protocol.framing import SSE_KEEPALIVE, sse_frame

router = APIRouter(tags=["Administration"])

PAGE = 500  # entries per read
Item = tuple[str, bytes]  # (id, JSON)


@dataclass(frozen=True)
class FeedQuery:
    thread: str | None = None
    run: str | None = None
    user: str | None = None
    types: frozenset[str] | None = None
    kinds: frozenset[str] | None = None
    after: str = "0-0"  # read the entries after this id...
    seen: tuple[str, int] | None = None  # ...but of this entry, only the items after this one
    replay: bool = False  # False: from now on
    resumed: bool = False  # a reader's cursor: what it has not seen may have been trimmed

    def takes_note(self, entry: FeedEntry) -> bool:
        """Notes belong to no run: a filter on threads, runs or event types leaves them out."""
        return (
            (self.kinds is None or entry.kind in self.kinds)
            and self.user in (None, entry.owner)
            and self.thread is self.run is self.types is None
        )

    def takes_run(self, batch: EventBatch) -> bool:
        return (
            (self.kinds is None or FEED_RUN in self.kinds)
            and self.user in (None, batch.owner)
            and self.thread in (None, batch.thread_id)
            and self.run in (None, batch.run_id)
        )


async def feed_query(
    thread: Annotated[str | None, Query(max_length=256)] = None,
    run: Annotated[str | None, Query(max_length=256)] = None,
    user: Annotated[str | None, Query(max_length=256)] = None,
    types: Annotated[str | None, Query(max_length=2000, description="Comma-separated")] = None,
    kinds: Annotated[str | None, Query(max_length=200, description="Comma-separated")] = None,
    since: Annotated[str | None, Query(description="ISO-8601 time or epoch ms")] = None,
    after: Annotated[str | None, Query(max_length=100, description="An item id")] = None,
    last_event_id: Annotated[str | None, Header(max_length=100)] = None,
) -> FeedQuery:
    """The filters and the starting point; 422 on anything malformed."""
    cursor = last_event_id or after
    fields: dict[str, Any] = {
        name: value for name, value in (("thread", thread), ("run", run), ("user", user)) if value
    }
    for name, value in (("types", types), ("kinds", kinds)):
        if value:
            fields[name] = frozenset(filter(None, value.split(",")))
    try:
        if cursor:
            entry, _, index = cursor.partition(".")
            parse_feed_id(entry)
            seen = (entry, int(index)) if index else None
            after = feed_id_before(entry) if seen else entry
            return FeedQuery(**fields, after=after, seen=seen, replay=True, resumed=True)
        if since:
            start = f"{_epoch_ms(since)}-0"
            return FeedQuery(**fields, after=feed_id_before(start), replay=True)
    except ValueError as error:
        raise Refusal("invalid_input", f"after/since: {error}") from None
    return FeedQuery(**fields)


def _epoch_ms(value: str) -> int:
    if value.isascii() and value.isdigit():
        return int(value)
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        raise ValueError("a time needs its UTC offset")
    return max(0, int(moment.timestamp() * 1000))


async def feed_items(services: Services, query: FeedQuery) -> AsyncIterator[list[Item]]:
    """Batches of items; an empty batch says the keep-alive interval passed quietly."""
    bus: EventBus = services.bus
    block = services.settings.keepalive_interval
    max_lag_ms = services.settings.admin_feed_max_lag * 1000
    after, live = query.after, not query.replay
    oldest, newest = await _bounds(bus)
    if live:
        after = newest
    yield [(after, orjson.dumps({"id": after, "kind": "connected", "worker": bus.worker}))]
    if query.resumed:
        last_seen = query.seen[0] if query.seen else query.after
        if parse_feed_id(oldest) > parse_feed_id(last_seen):  # trimmed, or lost in a restart
            services.metrics.admin_feed_dropped.labels("retention").inc()
            yield [_resync("retention", last_seen, feed_id_before(oldest))]
    while True:
        try:
            entries = await bus.read_feed(after, PAGE, block if live else 0)
            if live and len(entries) == PAGE:
                newest = (await bus.feed_bounds())[1]
                if parse_feed_id(newest)[0] - parse_feed_id(entries[0].id)[0] > max_lag_ms:
                    services.metrics.admin_feed_dropped.labels("slow_consumer").inc()
                    yield [_resync("slow_consumer", after, newest)]
                    after = newest
                    continue
        except BusUnavailable:
            await asyncio.sleep(1.0)  # Redis is away: keep the reader, go on when it is back
            yield []
            continue
        if not entries:
            if live:
                yield []
            live = True  # a replay that has caught up goes on live
            continue
        items = [item for entry in entries for item in _items(entry, query)]
        after = entries[-1].id
        if items:
            yield items


async def _bounds(bus: EventBus) -> tuple[str, str]:
    """The feed's bounds; with Redis away, "now" (by this worker's clock) for both."""
    try:
        return await bus.feed_bounds()
    except BusUnavailable:
        now = f"{int(time.time() * 1000)}-0"
        return now, now


def _items(entry: FeedEntry, query: FeedQuery) -> list[Item]:
    if entry.kind != FEED_RUN:
        if not query.takes_note(entry):
            return []
        head = orjson.dumps(
            {"id": entry.id, "kind": entry.kind, "worker": entry.worker, "userId": entry.owner}
        )
        return [(entry.id, head[:-1] + b',"note":' + entry.note + b"}")]
    seen = query.seen[1] if query.seen and query.seen[0] == entry.id else -1
    items = []
    start = 0  # the index of the batch's first event in the entry
    for batch in entry.batches:
        if query.takes_run(batch):
            wrapper = {
                "kind": FEED_RUN,
                "worker": entry.worker,
                "threadId": batch.thread_id,
                "runId": batch.run_id,
                "userId": batch.owner,
            }
            for offset, data in enumerate(batch.events):
                if start + offset <= seen or (
                    query.types is not None and orjson.loads(data)["type"] not in query.types
                ):
                    continue
                item_id = f"{entry.id}.{start + offset}"
                head = orjson.dumps({"id": item_id, **wrapper, "seq": batch.seq_from + offset})
                items.append((item_id, head[:-1] + b',"event":' + data + b"}"))
        start += len(batch.events)
    return items


def _resync(reason: str, skipped_after: str, resume_after: str) -> Item:
    """A reader skipped ahead: what it missed is ``after`` ``skipped_after``, up to and
    including ``resume_after``."""
    body = {"id": resume_after, "kind": "resync", "reason": reason, "skippedAfter": skipped_after}
    return resume_after, orjson.dumps(body)


# Faces --------------------------------------------------------------------------------------

Admin = Annotated[Principal, Depends(ADMIN)]
Query_ = Annotated[FeedQuery, Depends(feed_query)]


@router.get(
    "/admin/events",
    response_class=EventStreamResponse,
    responses={
        200: {
            "description": "A `connected` item, then one item per run event or note",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
        **refusals("invalid_input"),
    },
)
async def events_sse(services: ServicesDep, principal: Admin, query: Query_) -> Response:
    """Every run's events from every worker, live (see the module's docstring); also a
    WebSocket at the same path, one item per text frame."""
    return EventStreamResponse(_sse(services, query))


async def _sse(services: Services, query: FeedQuery) -> AsyncIterator[bytes]:
    deadline = asyncio.get_running_loop().time() + services.settings.stream_max_duration
    async for items in feed_items(services, query):
        yield b"".join(sse_frame(data, item_id) for item_id, data in items) or SSE_KEEPALIVE
        if asyncio.get_running_loop().time() >= deadline:
            return  # the client reconnects after the last id, with a fresh credential


@router.websocket("/admin/events")
async def events_ws(
    websocket: WebSocket, services: ServicesDep, principal: Admin, query: Query_
) -> None:
    """One item per text frame; the client sends nothing (what it sends is ignored)."""
    await websocket.accept()

    async def send_items() -> None:
        async for items in feed_items(services, query):
            for _, data in items:
                await websocket.send_text(data.decode())

    async def listen() -> None:
        while (await websocket.receive())["type"] != "websocket.disconnect":
            pass

    sender, listener = asyncio.create_task(send_items()), asyncio.create_task(listen())
    try:
        async with asyncio.timeout(services.settings.stream_max_duration):
            done, _ = await asyncio.wait({sender, listener}, return_when=asyncio.FIRST_COMPLETED)
        if sender in done:
            sender.result()
    except TimeoutError:
        await websocket.close(code=STREAM_TIME_LIMIT_CLOSE, reason="stream_time_limit")
    except WebSocketDisconnect:
        return
    finally:
        for task in (sender, listener):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect):
                await task
