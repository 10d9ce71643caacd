"""Who asks for a reload, and what is recorded.

- ``POST /admin/config/reload`` reloads this worker, then, when it is valid here and Redis
  is configured, every other worker (:mod:`.peers`); one audit row holds what each did.
- ``SIGHUP`` (``citadel serve``) reloads this process only: a signal is addressed to a
  process, and an operator signals each one they mean. Audited as ``citadel``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from agent_server.config import Settings
from agent_server.reload.peers import PEER_TIMEOUT, PeersUnavailable, ReloadPeers
from agent_server.reload.reloader import Outcome, Reloader
from agent_server.services import Services, open_redis
from agent_server.store.base import Actor, StorageUnavailable

logger = logging.getLogger("citadel.config")

SYSTEM = Actor("citadel")
ACTION = "config.reload"


@dataclass(frozen=True, slots=True)
class Report:
    """A reload as its asker sees it: its own outcome, then the other workers'."""

    own: Outcome
    others: list[Outcome] = field(default_factory=list)
    unanswered: int = 0  # workers that received the request and did not answer in time
    peer_error: str | None = None  # why the other workers could not be asked

    def as_json(self) -> dict[str, Any]:
        answer = {
            **self.own.as_json(),
            "workers": [self.own.as_json(), *(outcome.as_json() for outcome in self.others)],
            "unanswered": self.unanswered,
        }
        if self.peer_error is not None:
            answer["peerError"] = self.peer_error
        return answer


class Reloads:
    """One per app: reloads of ``services`` with the settings ``load`` reads, from
    :meth:`start` to :meth:`stop` and :meth:`aclose`."""

    def __init__(self, services: Services, load: Callable[[], Settings]) -> None:
        self.reloader = Reloader(services, load)
        self._peers: ReloadPeers | None = None
        self._resources = contextlib.AsyncExitStack()
        self._sighup = False
        self._background: set[asyncio.Task[None]] = set()

    def start(self, *, sighup: bool = False) -> None:
        """Listen on the reload channel when Redis is configured, and for SIGHUP when
        ``sighup`` (one app per process: ``citadel serve``)."""
        services = self.reloader.services
        if services.redis_client is not None:
            # Its reads wait on subscriptions: longer than the shared client's half second.
            blocking = open_redis(services.settings, self._resources, timeout=PEER_TIMEOUT + 5)
            assert blocking is not None
            self._peers = ReloadPeers(
                services.redis_client,
                blocking,
                services.settings.reload_channel,
                self.reloader.worker,
                self.reloader.reload,
            )
            self._peers.start()
        if sighup:
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self._signalled)
            self._sighup = True

    async def everywhere(self, actor: Actor) -> Report:
        """Reload this worker, then the others if it is valid here; audited."""
        report = Report(self.reloader.reload())
        if self._peers is not None and not report.own.problems:
            try:
                answers = await self._peers.reload_others()
            except PeersUnavailable as error:
                logger.warning("configuration reload of the other workers: %s", error)
                report = Report(report.own, peer_error=str(error))
            else:
                report = Report(report.own, answers.outcomes, answers.unanswered)
        await self._audit(actor, "http", report)
        return report

    async def stop(self) -> None:
        """No more reloads (the signal is no longer handled, the channel no longer heard),
        and the audit rows of those done are written."""
        if self._sighup:
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        if self._peers is not None:
            await self._peers.aclose()
        await self._resources.aclose()
        if self._background:
            await asyncio.wait(self._background)

    async def aclose(self) -> None:
        """After the services: the clients reloads replaced are closed once their runs end."""
        await self.reloader.aclose()

    def _signalled(self) -> None:
        outcome = self.reloader.reload()
        self._in_background(self._audit(SYSTEM, "SIGHUP", Report(outcome)))

    async def _audit(self, actor: Actor, via: str, report: Report) -> None:
        try:
            await self.reloader.services.store.audit(
                actor, ACTION, {"via": via, **report.as_json()}
            )
        except StorageUnavailable as error:  # the reload happened; its record is lost
            logger.warning("audit %s by %s not written: %s", ACTION, actor.user_id, error)

    def _in_background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
