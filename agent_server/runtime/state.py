"""Shared state: the client is told a snapshot once, then JSON Patch deltas against it."""

from __future__ import annotations

from typing import Any

import orjson

from protocol import events, jsonpatch
from protocol.events import Event


class SharedState:
    def __init__(self, initial: Any, *, announced: bool) -> None:
        """``announced``: the client already holds ``initial`` (it sent it as input.state)."""
        self._sent: Any = _copy(initial) if initial is not None else {}
        self._announced = announced
        # What tools read and change; compared with what the client last saw.
        self.working: Any = _copy(self._sent)

    @property
    def value(self) -> Any:
        return self._sent

    def announce(self) -> list[Event]:
        """A snapshot if the client does not hold the current state yet."""
        if self._announced:
            return []
        self._announced = True
        return [events.state_snapshot(_copy(self._sent))]

    def publish(self) -> list[Event]:
        """Events that bring the client from what it last saw to ``working``."""
        current = _copy(self.working)
        if not self._announced:
            self._sent, self._announced = current, True
            return [events.state_snapshot(_copy(current))]
        patch = jsonpatch.diff(self._sent, current)
        self._sent = current
        return [events.state_delta(patch)] if patch else []


def _copy(value: Any) -> Any:
    return orjson.loads(orjson.dumps(value))
