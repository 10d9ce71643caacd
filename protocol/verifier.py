"""Judge an AG-UI event stream the way the real clients and ``ag-ui-validate`` do.

Combines the clients' ordering rules (:mod:`protocol.lifecycle`), their schema pickiness
(no ``null`` optionals, integer timestamps, required fields), the validator's stricter checks
(no id reuse in a run, tool arguments that are valid JSON, deltas that apply) and version
gating (what a 0.0.59 client must never see). Usable on live events or a recorded stream:
``citadel verify stream.sse [--legacy]``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from protocol import jsonpatch
from protocol.events import Event, EventType
from protocol.framing import parse_sse
from protocol.lifecycle import Lifecycle, LifecycleError
from protocol.versions import LEGACY_EVENT_TYPES, WireVersion

_REQUIRED: dict[str, tuple[str, ...]] = {
    EventType.RUN_STARTED: ("threadId", "runId"),
    EventType.RUN_FINISHED: ("threadId", "runId"),
    EventType.RUN_ERROR: ("message",),
    EventType.STEP_STARTED: ("stepName",),
    EventType.STEP_FINISHED: ("stepName",),
    EventType.TEXT_MESSAGE_START: ("messageId",),
    EventType.TEXT_MESSAGE_CONTENT: ("messageId", "delta"),
    EventType.TEXT_MESSAGE_END: ("messageId",),
    EventType.TOOL_CALL_START: ("toolCallId", "toolCallName"),
    EventType.TOOL_CALL_ARGS: ("toolCallId", "delta"),
    EventType.TOOL_CALL_END: ("toolCallId",),
    EventType.TOOL_CALL_RESULT: ("messageId", "toolCallId", "content"),
    EventType.STATE_SNAPSHOT: ("snapshot",),
    EventType.STATE_DELTA: ("delta",),
    EventType.MESSAGES_SNAPSHOT: ("messages",),
    EventType.CUSTOM: ("name", "value"),
    EventType.RAW: ("event",),
    EventType.REASONING_START: ("messageId",),
    EventType.REASONING_END: ("messageId",),
    EventType.REASONING_MESSAGE_START: ("messageId",),
    EventType.REASONING_MESSAGE_CONTENT: ("messageId", "delta"),
    EventType.REASONING_MESSAGE_END: ("messageId",),
}

# Fields that are required yet may hold null.
_NULLABLE = {(EventType.CUSTOM, "value"), (EventType.STATE_SNAPSHOT, "snapshot")}


@dataclass(frozen=True, slots=True)
class Finding:
    index: int
    event_type: str
    rule: str
    message: str

    def __str__(self) -> str:
        return f"#{self.index} {self.event_type}: [{self.rule}] {self.message}"


@dataclass
class StreamVerifier:
    version: WireVersion = WireVersion.V1
    findings: list[Finding] = field(default_factory=list)
    _lifecycle: Lifecycle = field(default_factory=Lifecycle)
    _index: int = -1
    _ids_in_run: set[str] = field(default_factory=set)
    _tool_args: dict[str, list[str]] = field(default_factory=dict)
    _state: Any = None
    _has_state: bool = False
    _terminated: bool = False

    def feed(self, event: Any) -> None:
        self._index += 1
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            self._fail("schema", "every event is a JSON object with a string type", "?")
            return
        kind = event["type"]
        if kind not in EventType.__members__:
            if self.version is WireVersion.LEGACY:
                self._fail("gating", "unknown event type (fatal on 0.0.59)", kind)
            return  # 1.0 clients drop unknown types
        self._check_schema(event)
        if self.version is WireVersion.LEGACY:
            self._check_legacy(event)
        try:
            self._lifecycle.observe(event)
        except LifecycleError as error:
            self._fail("order", str(error), kind)
        self._check_content(event)
        self._terminated = kind in (EventType.RUN_FINISHED, EventType.RUN_ERROR)

    def finish(self) -> list[Finding]:
        if self._index < 0:
            self._fail("order", "the stream is empty", "-")
        elif not self._terminated:
            self._fail("order", "the stream ends without RUN_FINISHED or RUN_ERROR", "-")
        return self.findings

    def _fail(self, rule: str, message: str, kind: str) -> None:
        self.findings.append(Finding(self._index, kind, rule, message))

    def _check_schema(self, event: Event) -> None:
        kind = event["type"]
        for key in _REQUIRED.get(kind, ()):
            if key not in event:
                self._fail("schema", f"missing required field {key!r}", kind)
        for key, value in event.items():
            if value is None and (kind, key) not in _NULLABLE:
                self._fail("schema", f"{key!r} is null; omit optional fields instead", kind)
        timestamp = event.get("timestamp")
        if timestamp is not None and (type(timestamp) is not int or abs(timestamp) > 2**53 - 1):
            self._fail("schema", "timestamp must be an integer (milliseconds)", kind)
        if kind == EventType.RUN_FINISHED and "outcome" in event:
            self._check_outcome(event["outcome"])

    def _check_outcome(self, outcome: Any) -> None:
        kind = EventType.RUN_FINISHED
        if not isinstance(outcome, dict) or outcome.get("type") not in (
            "success",
            "interrupt",
            "cancelled",
        ):
            self._fail("schema", f"unknown outcome {outcome!r}", kind)
        elif outcome["type"] == "interrupt":
            interrupts = outcome.get("interrupts")
            if not isinstance(interrupts, list) or not interrupts:
                self._fail("schema", "an interrupt outcome needs at least one interrupt", kind)
                return
            ids = [item.get("id") for item in interrupts if isinstance(item, dict)]
            if len(ids) != len(interrupts) or not all(isinstance(i, str) for i in ids):
                self._fail("schema", "every interrupt has a string id", kind)
            elif len(set(ids)) != len(ids):
                self._fail("schema", "interrupt ids must be unique in a run", kind)

    def _check_legacy(self, event: Event) -> None:
        kind = event["type"]
        if kind not in LEGACY_EVENT_TYPES:
            self._fail("gating", "event type unknown to 0.0.59 (fatal there)", kind)
        if kind == EventType.RUN_FINISHED and isinstance(event.get("outcome"), dict):
            outcome = event["outcome"]
            if outcome.get("type") == "cancelled":
                self._fail("gating", "cancelled outcome is fatal on 0.0.59", kind)
            if outcome.get("type") == "success" and set(outcome) != {"type"}:
                self._fail("gating", "0.0.59 accepts exactly {type: success}", kind)
        if kind == EventType.TOOL_CALL_RESULT and not isinstance(event.get("content"), str):
            self._fail("gating", "array tool result content is fatal on 0.0.59", kind)

    def _check_content(self, event: Event) -> None:
        kind = event["type"]
        if kind == EventType.RUN_STARTED:
            self._ids_in_run.clear()
            self._tool_args.clear()
        elif kind in (
            EventType.TEXT_MESSAGE_START,
            EventType.REASONING_MESSAGE_START,
            EventType.TOOL_CALL_START,
        ):
            span_id = event.get("messageId") or event.get("toolCallId")
            if span_id in self._ids_in_run:
                self._fail("ids", f"id {span_id!r} reused within the run", kind)
            self._ids_in_run.add(span_id)
            if kind == EventType.TOOL_CALL_START:
                self._tool_args[span_id] = []
        elif kind == EventType.TOOL_CALL_ARGS and event.get("toolCallId") in self._tool_args:
            self._tool_args[event["toolCallId"]].append(str(event.get("delta", "")))
        elif kind == EventType.TOOL_CALL_END and event.get("toolCallId") in self._tool_args:
            arguments = "".join(self._tool_args[event["toolCallId"]])
            try:
                orjson.loads(arguments or "{}")
            except orjson.JSONDecodeError:
                self._fail("tools", f"arguments are not valid JSON: {arguments[:80]!r}", kind)
        elif kind == EventType.STATE_SNAPSHOT:
            self._state, self._has_state = event.get("snapshot"), True
        elif kind == EventType.STATE_DELTA:
            try:
                self._state = jsonpatch.apply(
                    self._state if self._has_state else {}, event["delta"]
                )
                self._has_state = True
            except (jsonpatch.PatchError, KeyError, TypeError) as error:
                self._fail("state", f"delta does not apply to the mirrored state: {error}", kind)


def verify_events(events: Iterable[Any], version: WireVersion = WireVersion.V1) -> list[Finding]:
    verifier = StreamVerifier(version=version)
    for event in events:
        verifier.feed(event)
    return verifier.finish()


def events_from_recording(data: bytes) -> list[Any]:
    """Events from a recorded SSE body, or from JSON lines (one event per line)."""
    text = data.lstrip()
    if text.startswith((b"data:", b"id:", b":", b"event:")):
        if b"\r\n" in data:
            raise ValueError("CRLF line endings: real AG-UI clients never dispatch these frames")
        return [orjson.loads(message.data) for message in parse_sse(data)]
    return [orjson.loads(line) for line in data.splitlines() if line.strip()]
