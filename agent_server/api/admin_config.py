"""``POST /admin/config/reload``: read the configuration again, on every worker."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import Field
from starlette.requests import Request

from agent_server.api.deps import ReloadsDep, actor
from agent_server.api.errors import refusals
from agent_server.api.guard import ADMIN
from agent_server.api.models import RestModel
from agent_server.auth.principals import Principal
from agent_server.reload.reloader import Outcome, Status
from protocol.errors import Refusal

router = APIRouter(tags=["Administration"])


class WorkerReload(RestModel):
    worker: str
    status: Status
    applied: list[str] = Field(description="Settings now in force, by variable name")
    restart_required: list[str] = Field(description="Changed, but in force only after a restart")
    problems: list[str] = Field(description="Why this worker changed nothing")

    @classmethod
    def of(cls, outcome: Outcome) -> WorkerReload:
        return cls(
            worker=outcome.worker,
            status=outcome.status,
            applied=outcome.applied,
            restart_required=outcome.restart_required,
            problems=outcome.problems,
        )


class ConfigReload(RestModel):
    status: Status = Field(description="This worker's: applied or unchanged")
    message: str
    applied: list[str] = Field(description="Settings now in force on this worker")
    restart_required: list[str] = Field(description="Changed, but in force only after a restart")
    workers: list[WorkerReload] = Field(description="Every worker that answered, this one first")
    unanswered: int = Field(description="Workers told of the reload that did not answer in time")
    peer_error: str | None = Field(None, description="Why the other workers were not told")


@router.post(
    "/admin/config/reload",
    response_model_exclude_none=True,
    responses=refusals("invalid_config"),
)
async def reload_config(
    request: Request, reloads: ReloadsDep, principal: Annotated[Principal, Depends(ADMIN)]
) -> ConfigReload:
    """Read the configuration file and the environment again and put in force what can
    change live (limits, CORS origins, approval tools, retrieval policy, log level, model and
    knowledge-base servers); settings that need a restart are named, not applied. With Redis,
    every worker reloads its own file and environment and says what it did. An invalid
    configuration changes nothing: 422 `invalid_config` lists every problem in `problems`.
    Audited."""
    report = await reloads.everywhere(actor(request, principal))
    own = report.own
    if own.problems:
        raise Refusal("invalid_config", own.summary(), problems=own.problems)
    return ConfigReload(
        status=own.status,
        message=own.summary(),
        applied=own.applied,
        restart_required=own.restart_required,
        workers=[WorkerReload.of(outcome) for outcome in (own, *report.others)],
        unanswered=report.unanswered,
        peer_error=report.peer_error,
    )
