"""Refusals: a request turned down before anything changed, with a stable code.

The code is the contract (clients branch on it); the message is for people. How a refusal
reaches the client is the face's business: an HTTP status with a JSON body, a WebSocket
close code, an error frame. Nothing below the faces knows about statuses.
"""

from __future__ import annotations

from typing import Any


class Refusal(Exception):
    """``code``: a stable snake_case name; ``details``: extra fields of the error body."""

    def __init__(self, code: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code!r}, {self.message!r})"
