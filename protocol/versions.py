"""Version gating: what each generation of client may be sent.

CopilotKit 1.74/1.75 pins ``@ag-ui/client`` 0.0.59, which sends no ``protocolVersion`` and
treats 1.0-only shapes as fatal: a ``cancelled`` outcome, ``pendingToolCallIds`` (its success
outcome schema is strict), array ``TOOL_CALL_RESULT.content`` and event types it does not
know. Events are stored in their 1.0 form; :func:`downgrade` derives the legacy form per
reader, so one run can serve both generations. The legacy form declares no version, as the
client declares none: its ``RUN_STARTED`` has no ``protocolVersion`` (a field @ag-ui/core
0.0.59 does not have), so a stream that is not 1.0 never says it is.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

import orjson

from protocol.events import Event, EventType


class WireVersion(Enum):
    LEGACY = "0.0"  # no protocolVersion: @ag-ui/client 0.0.x
    V1 = "1.0"


def wire_version(protocol_version: str | None) -> WireVersion:
    """Clients declaring 1.0 or later get 1.0; a later major is served 1.0, as the spec says."""
    if protocol_version is None:
        return WireVersion.LEGACY
    major = protocol_version.split(".", 1)[0]
    return WireVersion.V1 if major.isdigit() and int(major) >= 1 else WireVersion.LEGACY


# The event types @ag-ui/core 0.0.59 declares (its EventType enum), minus the deprecated
# THINKING_*. A fixed fact about that release: types added to the protocol later are not in it.
LEGACY_EVENT_TYPES = frozenset(
    {
        "RUN_STARTED", "RUN_FINISHED", "RUN_ERROR", "STEP_STARTED", "STEP_FINISHED",
        "TEXT_MESSAGE_START", "TEXT_MESSAGE_CONTENT", "TEXT_MESSAGE_END", "TEXT_MESSAGE_CHUNK",
        "TOOL_CALL_START", "TOOL_CALL_ARGS", "TOOL_CALL_END", "TOOL_CALL_CHUNK",
        "TOOL_CALL_RESULT", "STATE_SNAPSHOT", "STATE_DELTA", "MESSAGES_SNAPSHOT",
        "ACTIVITY_SNAPSHOT", "ACTIVITY_DELTA", "RAW", "CUSTOM",
        "REASONING_START", "REASONING_MESSAGE_START", "REASONING_MESSAGE_CONTENT",
        "REASONING_MESSAGE_END", "REASONING_MESSAGE_CHUNK", "REASONING_END",
        "REASONING_ENCRYPTED_VALUE", "SUBAGENT_STARTED", "SUBAGENT_FINISHED", "SUBAGENT_ERROR",
    }
)  # fmt: skip


def downgrade(event: Event) -> Event | None:
    """The event as a 0.0.59 client can take it; ``None`` when it must be dropped.

    Returns the same object when nothing changes, so unchanged events keep sharing bytes.
    """
    event_type = event["type"]
    if event_type not in LEGACY_EVENT_TYPES:
        return None
    if event_type == EventType.RUN_STARTED and "protocolVersion" in event:
        return {key: value for key, value in event.items() if key != "protocolVersion"}
    if event_type == EventType.RUN_FINISHED and "outcome" in event:
        outcome = event["outcome"]
        if outcome["type"] == "interrupt":
            return event
        legacy = {key: value for key, value in event.items() if key != "outcome"}
        if outcome["type"] == "success":
            # 0.0.59 accepts exactly {"type": "success"}; the pending calls are still visible
            # to it as tool calls without results.
            legacy["outcome"] = {"type": "success"}
        # "cancelled" has no 0.0.59 form: a plain RUN_FINISHED ends the run without an error
        # banner, which is what a user who pressed stop expects.
        return legacy
    if event_type == EventType.TOOL_CALL_RESULT and not isinstance(event["content"], str):
        return {**event, "content": flatten_content(event["content"])}
    return event


def flatten_content(parts: list[dict[str, Any]]) -> str:
    """Text parts joined; anything else as its JSON, so nothing is silently lost."""
    if all(part.get("type") == "text" for part in parts):
        return "".join(part["text"] for part in parts)
    return orjson.dumps(parts).decode()
