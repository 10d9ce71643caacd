"""The one error reading a document raises, with a stable code the API can hand to the user."""

from __future__ import annotations

from typing import Literal

ErrorCode = Literal["unsupported_type", "empty", "corrupt", "too_large", "encrypted"]


class DocumentError(Exception):
    """One file could not be read; ``code`` is stable, ``message`` says what to do about it.

    Codes: ``unsupported_type`` (no reader for the name or content type), ``empty`` (no text
    after extraction), ``corrupt`` (unreadable bytes: broken PDF, text not in its encoding),
    ``too_large`` (above the caller's byte limit), ``encrypted`` (a PDF that needs a password).
    """

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code: ErrorCode = code
        self.message = message
