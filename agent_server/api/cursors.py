"""Page cursors: opaque to clients, which hand them back unread."""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime

import orjson

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
