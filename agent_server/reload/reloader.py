"""Reloading a worker's configuration: read, check, build, swap, then close what was replaced.

1. **Read and check** the file and the environment again: unknown keys, invalid values, and
   the problems of both the new settings and the settings that would be in force (a live
   change beside a restart-only one may make an unsafe mix, such as CORS ``*`` with the
   production mode still running). Any problem, and nothing changes: the outcome lists them
   all.
2. **Build** everything the live changes need before touching anything: a chat model client
   when one of its settings changed, the agent and its tools, the clients of the rerank and
   embedding servers.
3. **Swap** it all in one step (:meth:`~agent_server.services.Services.reconfigure`).

Steps 1 to 3 are one synchronous call: nothing awaits, so no request, run or other reload
runs in between, and each begins wholly under the old configuration or wholly under the new.

4. **Retire** the replaced clients in the background: a model once every run that started
   with it has ended (runs keep their agent), the HTTP clients once their requests in flight
   are done (:class:`~agent_server.backends.resilience.ResilientHTTP` closes gracefully).

Settings that need a restart (:mod:`.changes`) are named in the outcome and not applied.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Literal

from agent_server.config import ConfigError, Settings
from agent_server.knowledge.embedders import create_embedder
from agent_server.models import create_chat_model
from agent_server.models.base import ChatModel
from agent_server.reload.changes import (
    CHAT_MODEL,
    EMBEDDING_SERVER,
    RERANKER,
    Changes,
    compare,
    variables,
)
from agent_server.services import Services, check_agents, create_reranker

logger = logging.getLogger("citadel.config")

Status = Literal["applied", "unchanged", "invalid"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one worker's reload did. ``problems``: it changed nothing."""

    worker: str
    applied: list[str] = field(default_factory=list)  # variables now in force
    restart_required: list[str] = field(default_factory=list)  # changed, not applied
    problems: list[str] = field(default_factory=list)

    @property
    def status(self) -> Status:
        if self.problems:
            return "invalid"
        return "applied" if self.applied else "unchanged"

    def summary(self) -> str:
        if self.problems:
            return f"the configuration has {len(self.problems)} problem(s); nothing changed"
        said = f"applied {', '.join(self.applied)}" if self.applied else "nothing changed"
        if self.restart_required:
            said += f"; a restart is needed for {', '.join(self.restart_required)}"
        return said

    def as_json(self) -> dict[str, Any]:
        return {
            "worker": self.worker,
            "status": self.status,
            "applied": self.applied,
            "restartRequired": self.restart_required,
            "problems": self.problems,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Outcome:
        return cls(data["worker"], data["applied"], data["restartRequired"], data["problems"])


class Reloader:
    """One per app: reloads ``services`` with the settings ``load`` reads."""

    def __init__(self, services: Services, load: Callable[[], Settings]) -> None:
        self.services = services
        self.worker = services.runs.manager.worker
        self._load = load
        self._retiring: set[asyncio.Task[None]] = set()

    def reload(self) -> Outcome:
        """Read the configuration again and put its live changes in force (see the module)."""
        running = self.services.settings
        try:
            new = self._load()
        except ConfigError as error:
            return self._logged(Outcome(self.worker, problems=error.problems))
        changes = compare(running, new)
        restart = variables(changes.restart)
        in_force = changes.in_force(running, new)
        problems = _problems(new, in_force)
        if problems:
            return self._logged(Outcome(self.worker, restart_required=restart, problems=problems))
        if changes.live:
            self._apply(in_force, changes)
        return self._logged(Outcome(self.worker, variables(changes.live), restart))

    async def aclose(self) -> None:
        """Wait until the replaced clients are closed (after the services, whose runs hold
        them)."""
        if self._retiring:
            await asyncio.wait(self._retiring)

    def _apply(self, settings: Settings, changes: Changes) -> None:
        services = self.services
        model, reranker = services.model, services.reranker
        embedder = services.embedder.inner
        new_model = create_chat_model(settings) if changes.rebuilds(CHAT_MODEL) else model
        new_reranker = create_reranker(settings) if changes.rebuilds(RERANKER) else reranker
        new_embedder = embedder
        if settings.embedder != "embedded" and changes.rebuilds(EMBEDDING_SERVER):
            new_embedder = create_embedder(settings)
        services.reconfigure(
            settings, services.build_agents(settings, new_model), new_reranker, new_embedder
        )
        if new_model is not model:
            self._retire(self._retire_model(model))
        if reranker is not None and new_reranker is not reranker:
            self._retire(reranker.aclose())
        if new_embedder is not embedder:
            self._retire(embedder.aclose())

    async def _retire_model(self, model: ChatModel) -> None:
        await self.services.runs.manager.drained(model)
        await model.aclose()

    def _retire(self, closing: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(_logged_failure(closing))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    @staticmethod
    def _logged(outcome: Outcome) -> Outcome:
        if outcome.problems:
            logger.warning("configuration reload refused: %s", "; ".join(outcome.problems))
        elif outcome.restart_required:
            logger.warning("configuration reloaded: %s", outcome.summary())
        else:
            logger.info("configuration reloaded: %s", outcome.summary())
        return outcome


def _problems(new: Settings, in_force: Settings) -> list[str]:
    """What makes ``new`` unusable at the next start, or ``in_force`` unusable now."""
    found = dict.fromkeys([*new.problems(), *in_force.problems()])
    try:
        check_agents(in_force)
    except ConfigError as error:
        found.update(dict.fromkeys(error.problems))
    return list(found)


async def _logged_failure(closing: Coroutine[Any, Any, None]) -> None:
    try:
        await closing
    except Exception:
        logger.exception("closing a client the configuration reload replaced failed")
