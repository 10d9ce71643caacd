"""Claims: which worker runs a thread's active run, and stop requests that reach it.

A thread has at most one active run. The worker that starts it claims the thread; the claim
names the run, its owner and the worker, so any worker can answer "is this thread busy, and
where?" and send a stop request to the right place. :class:`LocalClaims` is one process's
table; :class:`~agent_server.runs.redis_claims.RedisClaims` shares claims through Redis with
leases, so a worker that dies frees its threads when its leases lapse.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

StopHandler = Callable[[str, str], None]  # (thread id, run id)


class ClaimsUnavailable(RuntimeError):
    """Claims cannot be read or written now (Redis is down)."""


@dataclass(frozen=True, slots=True)
class Claim:
    run_id: str
    owner: str
    worker: str
    start_seq: int = 0  # the run's events are numbered after this (a resumed run continues)


class RunClaims(Protocol):
    on_stop: StopHandler | None  # called for stop requests meant for this worker's runs

    async def claim(self, thread_id: str, claim: Claim) -> Claim | None:
        """Claim ``thread_id`` for ``claim``'s run: None if claimed, else the holder."""

    async def release(self, thread_id: str, claim: Claim) -> None:
        """Free the thread if ``claim`` still holds it."""

    async def holder(self, thread_id: str) -> Claim | None: ...

    async def request_stop(self, thread_id: str, run_id: str) -> None:
        """Ask the worker running ``run_id`` to stop it."""

    async def watch(self, thread_id: str, run_id: str) -> None:
        """Say that a client follows the run from another worker (it is not abandoned)."""

    async def watched(self, thread_id: str, run_id: str) -> bool: ...

    async def start(self) -> None: ...

    async def aclose(self) -> None: ...


class LocalClaims:
    """Claims of one process: every run is local, so nobody else can ask."""

    def __init__(self) -> None:
        self.on_stop: StopHandler | None = None
        self._claims: dict[str, Claim] = {}

    async def claim(self, thread_id: str, claim: Claim) -> Claim | None:
        holder = self._claims.setdefault(thread_id, claim)
        return None if holder is claim else holder

    async def release(self, thread_id: str, claim: Claim) -> None:
        if self._claims.get(thread_id) == claim:
            del self._claims[thread_id]

    async def holder(self, thread_id: str) -> Claim | None:
        return self._claims.get(thread_id)

    async def request_stop(self, thread_id: str, run_id: str) -> None:
        if self.on_stop is not None:
            self.on_stop(thread_id, run_id)

    async def watch(self, thread_id: str, run_id: str) -> None:
        return None

    async def watched(self, thread_id: str, run_id: str) -> bool:
        return False

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        return None
