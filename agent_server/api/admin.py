"""Routes for administrators: the audit log and every user's runs."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Path, Query
from pydantic import Field
from starlette.responses import Response

from agent_server.api.cursors import decode_dated_cursor, encode_cursor, time_param
from agent_server.api.deps import ServicesDep
from agent_server.api.errors import refusals
from agent_server.api.guard import ADMIN
from agent_server.api.models import RestModel
from agent_server.auth.principals import Principal
from agent_server.store.base import RunCursor, RunQuery, RunRecord, RunStatus, ThreadStore, run_key
from protocol.errors import Refusal
from protocol.framing import MAX_SEQ

router = APIRouter(tags=["Administration"])
Admin = Annotated[Principal, Depends(ADMIN)]
Name = Annotated[str | None, Query(max_length=256)]

MAX_PAGE = 200
MAX_EVENTS = 10_000  # events in one answer of GET /admin/runs/{run_id}
MAX_THREADS_LISTED = 50  # threads named when a run id is ambiguous
MAX_AUDIT_ID = 2**63 - 1  # audit_log.id is a bigint


class AuditEntry(RestModel):
    id: int
    at: datetime
    actor: str
    action: str
    thread_id: str | None
    details: Any
    remote_addr: str | None


class AuditPage(RestModel):
    entries: list[AuditEntry]
    next_before: int | None = Field(None, description="Absent on the last page")


class Run(RestModel):
    thread_id: str
    run_id: str
    user_id: str
    status: str
    outcome: str | None
    error_code: str | None
    error_message: str | None
    input_tokens: int | None
    output_tokens: int | None
    usage: list[dict[str, Any]] | None
    protocol_version: str | None
    worker_id: str | None
    started_at: datetime
    first_event_at: datetime | None
    finished_at: datetime | None
    duration_ms: int | None
    last_seq: int


class RunPage(RestModel):
    runs: list[Run]
    next_before: str | None = Field(None, description="Absent on the last page")


class StoredEvent(RestModel):
    seq: int
    event: dict[str, Any]


class RunWithEvents(Run):
    events: list[StoredEvent]
    next_after_seq: int | None = Field(None, description="Absent when no more events")


@router.get(
    "/admin/audit",
    response_model_exclude_none=True,
    responses=refusals("invalid_input", "storage_unavailable"),
)
async def audit_log(
    services: ServicesDep,
    principal: Admin,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    before: Annotated[int | None, Query(ge=1, le=MAX_AUDIT_ID)] = None,
    actor: Name = None,
) -> AuditPage:
    """The audit log, newest first; `before` (an entry id) pages back, `actor` filters."""
    entries = await services.store.list_audit(limit, before, actor)
    page = AuditPage(
        entries=[
            AuditEntry(
                id=entry.id,
                at=entry.at,
                actor=entry.actor,
                action=entry.action,
                thread_id=entry.thread_id,
                details=entry.details,
                remote_addr=entry.remote_addr,
            )
            for entry in entries
        ]
    )
    if len(entries) == limit:
        return page.model_copy(update={"next_before": entries[-1].id})
    return page


@router.get(
    "/admin/runs",
    response_model=RunPage,
    responses=refusals("invalid_input", "storage_unavailable"),
)
async def list_runs(
    services: ServicesDep,
    principal: Admin,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    before: Annotated[str | None, Query(max_length=2000)] = None,
    status: Annotated[list[str] | None, Query()] = None,
    user: Name = None,
    thread: Name = None,
    error_code: Annotated[str | None, Query(alias="errorCode", max_length=100)] = None,
    since: Annotated[str | None, Query(description="ISO-8601 start time, inclusive")] = None,
    until: Annotated[str | None, Query(description="ISO-8601 start time, exclusive")] = None,
) -> Response:
    """Every user's runs, newest first; `before` (a cursor) pages back, the filters narrow:
    `status` (repeated or comma-separated), `user`, `thread`, `errorCode`, and `since`
    (inclusive) and `until` (exclusive) on the start time."""
    query = RunQuery(
        statuses=_statuses(status or []),
        owner=user,
        thread_id=thread,
        error_code=error_code,
        since=time_param("since", since),
        until=time_param("until", until),
    )
    if query.since is not None and query.until is not None and query.since >= query.until:
        raise Refusal("invalid_input", "since must be before until")
    page = await services.store.list_runs(query, limit + 1, _run_cursor(before))
    body: dict[str, Any] = {"runs": [_run_json(run) for run in page[:limit]]}
    if len(page) > limit:
        started_at, thread_id, run_id = run_key(page[limit - 1])
        body["nextBefore"] = encode_cursor(started_at.isoformat(), thread_id, run_id)
    return _json(body)


@router.get(
    "/admin/runs/{run_id}",
    response_model=RunWithEvents,
    responses=refusals("invalid_input", "run_not_found", "ambiguous_run", "storage_unavailable"),
)
async def get_run(
    run_id: Annotated[str, Path(max_length=256)],
    services: ServicesDep,
    principal: Admin,
    thread: Name = None,
    after_seq: Annotated[int, Query(alias="afterSeq", ge=0, le=MAX_SEQ)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_EVENTS)] = 1000,
) -> Response:
    """One run and its stored events in order, those after `afterSeq`, `limit` at most.
    Run ids are unique per thread only: `thread` says which when several threads have it
    (409 `ambiguous_run` names them)."""
    store = services.store
    runs = await _runs_named(store, run_id, thread)
    if not runs:
        raise Refusal("run_not_found", f"no run {run_id!r}")
    if len(runs) > 1:
        threads = [run.thread_id for run in runs]
        message = f"run {run_id!r} is on several threads ({', '.join(threads)}): add ?thread="
        raise Refusal("ambiguous_run", message, threadIds=threads)
    [run] = runs
    page = await store.event_page(run.thread_id, run.run_id, after_seq, limit + 1)
    # Stored events are JSON already: embedded as they are, not decoded and encoded again.
    events = [{"seq": seq, "event": orjson.Fragment(event)} for seq, event in page[:limit]]
    body: dict[str, Any] = {**_run_json(run), "events": events}
    if len(page) > limit:
        body["nextAfterSeq"] = page[limit - 1][0]
    return _json(body)


async def _runs_named(store: ThreadStore, run_id: str, thread_id: str | None) -> list[RunRecord]:
    if thread_id is None:
        return await store.find_runs(run_id, MAX_THREADS_LISTED)
    run = await store.get_run(thread_id, run_id)
    return [run] if run is not None else []


def _statuses(values: list[str]) -> frozenset[RunStatus]:
    names = [name.strip() for value in values for name in value.split(",")]
    try:
        return frozenset(RunStatus(name) for name in names)
    except ValueError:
        allowed = ", ".join(RunStatus)
        raise Refusal("invalid_input", f"status must be among {allowed}") from None


def _run_cursor(text: str | None) -> RunCursor | None:
    if text is None:
        return None
    found = decode_dated_cursor(text, 3)
    if found is None:
        raise Refusal("invalid_input", "before is not a cursor this server issued")
    started_at, (thread_id, run_id) = found
    return started_at, thread_id, run_id


def _run_json(run: RunRecord) -> dict[str, Any]:
    return {
        "threadId": run.thread_id,
        "runId": run.run_id,
        "userId": run.owner,
        "status": run.status.value,
        "outcome": run.outcome,
        "errorCode": run.error_code,
        "errorMessage": run.error_message,
        "inputTokens": run.input_tokens,
        "outputTokens": run.output_tokens,
        "usage": run.usage,
        "protocolVersion": run.protocol_version,
        "workerId": run.worker_id,
        "startedAt": run.started_at.isoformat(),
        "firstEventAt": _iso(run.first_event_at),
        "finishedAt": _iso(run.finished_at),
        "durationMs": run.duration_ms,
        "lastSeq": run.last_seq,
    }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _json(body: dict[str, Any]) -> Response:
    return Response(orjson.dumps(body), media_type="application/json")
