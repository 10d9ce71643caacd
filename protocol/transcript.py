"""Fold an event stream into the conversation it describes, as the clients do.

The server keeps the same mirror the client builds (``apply/default.ts``): the runtime reads
its history from it, and what gets stored is exactly what the client saw, including a
partial answer when a run is stopped.
"""

from __future__ import annotations

from typing import Any

from protocol import jsonpatch
from protocol.events import Event, EventType

Message = dict[str, Any]


class Transcript:
    def __init__(self, messages: list[Message] | None = None, state: Any = None) -> None:
        self._messages: list[Message] = [dict(message) for message in messages or ()]
        self.state = state
        self._by_id: dict[str, Message] = {message["id"]: message for message in self._messages}
        self._tool_calls: dict[str, dict[str, Any]] = {}
        # Text of messages still streaming, in pieces: joined when read, so a long answer
        # costs linear time, not the quadratic time of growing one string per delta.
        self._pieces: dict[str, list[str]] = {}

    @property
    def messages(self) -> list[Message]:
        for message_id in self._pieces:
            self._join(message_id)
        return self._messages

    def _join(self, message_id: str) -> None:
        pieces = self._pieces[message_id]
        if pieces:
            self._by_id[message_id]["content"] += "".join(pieces)
            pieces.clear()

    def append(self, message: Message) -> None:
        message = dict(message)
        self._messages.append(message)
        self._by_id[message["id"]] = message

    def __contains__(self, message_id: str) -> bool:
        return message_id in self._by_id

    def get(self, message_id: str) -> Message | None:
        return self._by_id.get(message_id)

    def apply(self, event: Event) -> None:
        kind = event["type"]
        if kind in (EventType.TEXT_MESSAGE_CONTENT, EventType.REASONING_MESSAGE_CONTENT):
            pieces = self._pieces.get(event["messageId"])
            if pieces is not None:
                pieces.append(event["delta"])
        elif kind in (EventType.TEXT_MESSAGE_START, EventType.REASONING_MESSAGE_START):
            role = "reasoning" if kind == EventType.REASONING_MESSAGE_START else "assistant"
            role = event.get("role", role)
            self.append({"id": event["messageId"], "role": role, "content": ""})
            self._pieces[event["messageId"]] = []
        elif kind in (EventType.TEXT_MESSAGE_END, EventType.REASONING_MESSAGE_END):
            if event["messageId"] in self._pieces:
                self._join(event["messageId"])
                del self._pieces[event["messageId"]]
        elif kind == EventType.TOOL_CALL_START:
            self._start_tool_call(event)
        elif kind == EventType.TOOL_CALL_ARGS:
            call = self._tool_calls.get(event["toolCallId"])
            if call is not None:
                call["function"]["arguments"] += event["delta"]
        elif kind == EventType.TOOL_CALL_RESULT:
            self.append(
                {
                    "id": event["messageId"],
                    "role": "tool",
                    "toolCallId": event["toolCallId"],
                    "content": event["content"],
                }
            )
        elif kind == EventType.STATE_SNAPSHOT:
            self.state = event["snapshot"]
        elif kind == EventType.STATE_DELTA:
            self.state = jsonpatch.apply(
                self.state if self.state is not None else {}, event["delta"]
            )
        elif kind == EventType.MESSAGES_SNAPSHOT:
            for message in event["messages"]:
                existing = self._by_id.get(message["id"])
                if existing is None:
                    self.append(message)
                elif existing is not message:
                    existing.clear()
                    existing.update(message)

    def _start_tool_call(self, event: Event) -> None:
        # Like the client: attach to the parent assistant message, or open one named after the
        # call, so both sides agree on message ids.
        parent_id = event.get("parentMessageId") or event["toolCallId"]
        parent = self._by_id.get(parent_id)
        if parent is None or parent.get("role") != "assistant":
            parent = {"id": event["toolCallId"] if parent else parent_id, "role": "assistant"}
            self.append(parent)
            parent = self._by_id[parent["id"]]
        call = {
            "id": event["toolCallId"],
            "type": "function",
            "function": {"name": event["toolCallName"], "arguments": ""},
        }
        parent.setdefault("toolCalls", []).append(call)
        self._tool_calls[call["id"]] = call
