"""Routes for administrators (the access layer refuses everyone else with 403)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from agent_server.api.http import decode_dated_cursor, encode_cursor, parse_time, services_of
from agent_server.store.base import RunCursor, RunQuery, RunRecord, RunStatus, ThreadStore, run_key
from protocol.input import InputError

MAX_PAGE = 200
MAX_EVENTS = 10_000  # events in one answer of GET /admin/runs/{run_id}
MAX_THREADS_LISTED = 50  # threads named when a run id is ambiguous


async def audit_log(request: Request) -> Response:
    """The audit log, newest first; ``before`` (an entry id) pages back, ``actor`` filters."""
    params = request.query_params
    limit = _integer(params, "limit", 50, 1, MAX_PAGE)
    before = _optional_integer(params, "before")
    entries = await services_of(request).store.list_audit(limit, before, params.get("actor"))
    body: dict[str, object] = {
        "entries": [
            {
                "id": entry.id,
                "at": entry.at.isoformat(),
                "actor": entry.actor,
                "action": entry.action,
                "threadId": entry.thread_id,
                "details": entry.details,
                "remoteAddr": entry.remote_addr,
            }
            for entry in entries
        ]
    }
    if len(entries) == limit:
        body["nextBefore"] = entries[-1].id
    return JSONResponse(body)


async def list_runs(request: Request) -> Response:
    """Every user's runs, newest first; ``before`` (a cursor) pages back, the filters narrow:
    ``status`` (repeated or comma-separated), ``user``, ``thread``, ``errorCode``, and
    ``since`` (inclusive) and ``until`` (exclusive) on the start time."""
    params = request.query_params
    limit = _integer(params, "limit", 50, 1, MAX_PAGE)
    query = _run_query(params)
    before = _run_cursor(params.get("before"))
    page = await services_of(request).store.list_runs(query, limit + 1, before)
    body: dict[str, Any] = {"runs": [_run_json(run) for run in page[:limit]]}
    if len(page) > limit:
        started_at, thread_id, run_id = run_key(page[limit - 1])
        body["nextBefore"] = encode_cursor(started_at.isoformat(), thread_id, run_id)
    return _json(body)


async def get_run(request: Request) -> Response:
    """One run and its stored events in order, those after ``afterSeq``, ``limit`` at most.
    Run ids are unique per thread only: ``thread`` says which when several threads have it."""
    params = request.query_params
    after_seq = _integer(params, "afterSeq", 0, 0)
    limit = _integer(params, "limit", 1000, 1, MAX_EVENTS)
    run_id = request.path_params["run_id"]
    store = services_of(request).store
    runs = await _runs_named(store, run_id, params.get("thread"))
    if not runs:
        raise InputError(404, "run_not_found", f"no run {run_id!r}")
    if len(runs) > 1:
        return _ambiguous(run_id, runs)
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


def _ambiguous(run_id: str, runs: list[RunRecord]) -> Response:
    """409 naming the threads, so the caller can pick one with ``thread``."""
    threads = [run.thread_id for run in runs]
    message = f"run {run_id!r} is on several threads ({', '.join(threads)}): add ?thread="
    error = {"code": "ambiguous_run", "message": message, "threadIds": threads}
    return _json({"error": error}, 409)


# Query parameters --------------------------------------------------------------------------


def _optional_integer(
    params: QueryParams, name: str, low: int | None = None, high: int | None = None
) -> int | None:
    """The integer ``name``, None if absent; 422 unless it is an integer within low..high."""
    text = params.get(name)
    if text is None:
        return None
    try:
        value = int(text)
    except ValueError:
        raise _not_an_integer(name, low, high) from None
    if (low is not None and value < low) or (high is not None and value > high):
        raise _not_an_integer(name, low, high)
    return value


def _integer(
    params: QueryParams, name: str, default: int, low: int | None = None, high: int | None = None
) -> int:
    value = _optional_integer(params, name, low, high)
    return default if value is None else value


def _not_an_integer(name: str, low: int | None, high: int | None) -> InputError:
    bounds = f" from {low}" if low is not None else ""
    if high is not None:
        bounds += f" to {high}"
    return InputError(422, "invalid_input", f"{name} must be an integer{bounds}")


def _run_query(params: QueryParams) -> RunQuery:
    since, until = _time(params, "since"), _time(params, "until")
    if since is not None and until is not None and since >= until:
        raise InputError(422, "invalid_input", "since must be before until")
    return RunQuery(
        statuses=_statuses(params.getlist("status")),
        owner=params.get("user"),
        thread_id=params.get("thread"),
        error_code=params.get("errorCode"),
        since=since,
        until=until,
    )


def _statuses(values: list[str]) -> frozenset[RunStatus]:
    names = [name.strip() for value in values for name in value.split(",")]
    try:
        return frozenset(RunStatus(name) for name in names)
    except ValueError:
        allowed = ", ".join(RunStatus)
        raise InputError(422, "invalid_input", f"status must be among {allowed}") from None


def _time(params: QueryParams, name: str) -> datetime | None:
    text = params.get(name)
    if text is None:
        return None
    value = parse_time(text)
    if value is None:
        raise InputError(
            422,
            "invalid_input",
            f"{name} must be an ISO-8601 time such as 2026-01-31T12:00:00Z (in a URL, + is %2B)",
        )
    return value


def _run_cursor(text: str | None) -> RunCursor | None:
    if text is None:
        return None
    found = decode_dated_cursor(text, 3)
    if found is None:
        raise InputError(422, "invalid_input", "before is not a cursor this server issued")
    started_at, (thread_id, run_id) = found
    return started_at, thread_id, run_id


# Answers -----------------------------------------------------------------------------------


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


def _json(body: dict[str, Any], status: int = 200) -> Response:
    return Response(orjson.dumps(body), status, media_type="application/json")


routes = [
    Route("/admin/audit", audit_log, methods=["GET"]),
    Route("/admin/runs", list_runs, methods=["GET"]),
    Route("/admin/runs/{run_id}", get_run, methods=["GET"]),
]
