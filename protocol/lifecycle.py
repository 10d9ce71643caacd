"""The ordering rules real clients enforce (``@ag-ui/client`` ``verify.ts``), as one tracker.

The verifier uses it to judge streams; the run manager uses it to close whatever a cancelled
or failed run left open, so every stream it ends is one a client accepts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from protocol import events
from protocol.events import Event, EventType


class LifecycleError(ValueError):
    """An event the client would reject at this point of the stream."""


@dataclass
class Lifecycle:
    run_active: bool = False
    last_terminal: str | None = None  # type of the last terminal event, if no run is active
    seen_any: bool = False
    texts: list[str] = field(default_factory=list)
    tool_calls: list[str] = field(default_factory=list)
    reasoning_spans: list[str] = field(default_factory=list)
    reasoning_messages: list[str] = field(default_factory=list)
    steps: list[str] = field(default_factory=list)

    def observe(self, event: Event) -> None:
        """Advance past ``event``, or raise :class:`LifecycleError` if it is out of order."""
        kind = event["type"]
        handler = _SPANS.get(kind)
        if handler is not None and self.run_active:  # the common case, once per token
            attribute, key, action = handler
            self._span(getattr(self, attribute), event.get(key), kind, action)
            return
        if not self.seen_any and kind not in (EventType.RUN_STARTED, EventType.RUN_ERROR):
            raise LifecycleError(f"the first event must be RUN_STARTED or RUN_ERROR, not {kind}")
        self.seen_any = True
        if kind == EventType.RUN_STARTED:
            if self.run_active:
                raise LifecycleError("RUN_STARTED inside an active run")
            self.run_active, self.last_terminal = True, None
            return
        if self.last_terminal == EventType.RUN_ERROR:
            raise LifecycleError(f"{kind} after RUN_ERROR; only RUN_STARTED may follow")
        if kind == EventType.RUN_ERROR:
            self._end_run(kind)
            return
        if self.last_terminal == EventType.RUN_FINISHED:
            raise LifecycleError(f"{kind} after RUN_FINISHED; only a new run may follow")
        if kind == EventType.RUN_FINISHED:
            still_open = self.open_items()
            if still_open:
                raise LifecycleError(f"RUN_FINISHED while still open: {', '.join(still_open)}")
            self._end_run(kind)

    def _end_run(self, kind: str) -> None:
        self.run_active, self.last_terminal = False, kind
        for spans in (
            self.texts,
            self.tool_calls,
            self.reasoning_spans,
            self.reasoning_messages,
            self.steps,
        ):
            spans.clear()

    @staticmethod
    def _span(open_ids: list[str], span_id: object, kind: str, action: str) -> None:
        if not isinstance(span_id, str):
            raise LifecycleError(f"{kind} without its id")
        if action == "start":
            if span_id in open_ids:
                raise LifecycleError(f"{kind} for {span_id!r}, which is already open")
            open_ids.append(span_id)
        elif span_id not in open_ids:
            raise LifecycleError(f"{kind} for {span_id!r}, which is not open")
        elif action == "end":
            open_ids.remove(span_id)

    def open_items(self) -> list[str]:
        return [
            *(f"text message {i}" for i in self.texts),
            *(f"tool call {i}" for i in self.tool_calls),
            *(f"reasoning message {i}" for i in self.reasoning_messages),
            *(f"reasoning {i}" for i in self.reasoning_spans),
            *(f"step {name}" for name in self.steps),
        ]

    def closing_events(self) -> list[Event]:
        """Events that close everything still open, innermost first, without ending the run."""
        closing = [events.text_message_end(i) for i in reversed(self.texts)]
        closing += [events.tool_call_end(i) for i in reversed(self.tool_calls)]
        closing += [events.reasoning_message_end(i) for i in reversed(self.reasoning_messages)]
        closing += [events.reasoning_end(i) for i in reversed(self.reasoning_spans)]
        closing += [events.step_finished(name) for name in reversed(self.steps)]
        return closing


# event type -> (which open-id list, the event's id field, what it does to the span)
_SPANS: dict[str, tuple[str, str, str]] = {
    EventType.TEXT_MESSAGE_START: ("texts", "messageId", "start"),
    EventType.TEXT_MESSAGE_CONTENT: ("texts", "messageId", "continue"),
    EventType.TEXT_MESSAGE_END: ("texts", "messageId", "end"),
    EventType.TOOL_CALL_START: ("tool_calls", "toolCallId", "start"),
    EventType.TOOL_CALL_ARGS: ("tool_calls", "toolCallId", "continue"),
    EventType.TOOL_CALL_END: ("tool_calls", "toolCallId", "end"),
    EventType.REASONING_START: ("reasoning_spans", "messageId", "start"),
    EventType.REASONING_END: ("reasoning_spans", "messageId", "end"),
    EventType.REASONING_MESSAGE_START: ("reasoning_messages", "messageId", "start"),
    EventType.REASONING_MESSAGE_CONTENT: ("reasoning_messages", "messageId", "continue"),
    EventType.REASONING_MESSAGE_END: ("reasoning_messages", "messageId", "end"),
    EventType.STEP_STARTED: ("steps", "stepName", "start"),
    EventType.STEP_FINISHED: ("steps", "stepName", "end"),
}
