"""Page cursors, opaque to clients, which hand them back unread; and the times that query
parameters name (``since``, ``until``)."""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime

import orjson

from protocol.errors import Refusal
from protocol.text import unstorable


def encode_cursor(*parts: str) -> str:
    """An opaque page cursor holding ``parts``."""
    return base64.urlsafe_b64encode(orjson.dumps(parts)).decode()


def decode_cursor(cursor: str, count: int) -> list[str] | None:
    """The ``count`` parts of a cursor :func:`encode_cursor` made; None if it is not one."""
    try:
        parts = orjson.loads(base64.urlsafe_b64decode(cursor))
    except (binascii.Error, ValueError):  # orjson.JSONDecodeError is a ValueError
        return None
    if not isinstance(parts, list) or len(parts) != count or unstorable(parts) is not None:
        return None
    return parts if all(isinstance(part, str) for part in parts) else None


def decode_dated_cursor(cursor: str, count: int) -> tuple[datetime, list[str]] | None:
    """A cursor of :func:`encode_cursor` whose first of ``count`` parts is a time: that time
    and the other parts; None if it is not one."""
    parts = decode_cursor(cursor, count)
    moment = parse_time(parts[0]) if parts is not None else None
    if parts is None or moment is None:
        return None
    return moment, parts[1:]


def parse_time(text: str) -> datetime | None:
    """An ISO-8601 time, in UTC if it names no offset; None if ``text`` is not one."""
    try:
        value = datetime.fromisoformat(text)
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        value.astimezone(UTC)  # a time whose UTC is out of range (year 0 or 10000)
    except (ValueError, OverflowError):
        return None
    return value


def time_param(name: str, text: str | None) -> datetime | None:
    """The ISO-8601 time a query parameter names (None when absent); 422 when it names none."""
    if text is None:
        return None
    value = parse_time(text)
    if value is None:
        raise Refusal(
            "invalid_input",
            f"{name} must be an ISO-8601 time such as 2026-01-31T12:00:00Z (in a URL, + is %2B)",
        )
    return value
