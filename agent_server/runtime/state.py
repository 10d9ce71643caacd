"""Shared state: within a run, a snapshot establishes the base, then JSON Patch deltas.

The first change in a run is sent as a STATE_SNAPSHOT even when the client sent the state
itself, so the deltas that follow apply to exactly the document the server holds (a client
whose copy drifted would otherwise fail the patch, which clients only log).
"""

from __future__ import annotations

from typing import Any

import orjson

from protocol import events, jsonpatch
from protocol.events import Event


class SharedState:
    def __init__(self, initial: Any, *, client_holds: bool) -> None:
        """``client_holds``: the client sent ``initial`` as input.state, so it has it."""
        self._sent: Any = _copy(initial) if initial is not None else {}
        self._client_holds = client_holds
        self._based = False  # a snapshot in this run fixed the base of later deltas
        # What tools read and change; compared with what the client last saw.
        self.working: Any = _copy(self._sent)

    @property
    def value(self) -> Any:
        return self._sent

    def announce(self) -> list[Event]:
        """A snapshot at the start of a run when the client does not hold the state."""
        if self._client_holds:
            return []
        self._based = True
        return [events.state_snapshot(_copy(self._sent))]

    def publish(self) -> list[Event]:
        """Events that bring the client from what it last saw to ``working``."""
        current = _copy(self.working)
        patch = jsonpatch.diff(self._sent, current)
        if not patch:
            return []
        self._sent = current
        if not self._based:
            self._based = True
            return [events.state_snapshot(_copy(current))]
        return [events.state_delta(patch)]


def _copy(value: Any) -> Any:
    return orjson.loads(orjson.dumps(value))
