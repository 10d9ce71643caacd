"""Routes for administrators (the access layer refuses everyone else with 403)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from agent_server.api.http import services_of
from protocol.input import InputError

MAX_PAGE = 200


async def audit_log(request: Request) -> Response:
    """The audit log, newest first; ``before`` (an entry id) pages back, ``actor`` filters."""
    params = request.query_params
    try:
        limit = int(params.get("limit", "50"))
        before = int(params["before"]) if "before" in params else None
    except ValueError:
        raise InputError(422, "invalid_input", "limit and before are integers") from None
    if not 1 <= limit <= MAX_PAGE:
        raise InputError(422, "invalid_input", f"limit is between 1 and {MAX_PAGE}")
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


routes = [Route("/admin/audit", audit_log, methods=["GET"])]
