"""Server-authoritative history: what a client's message list may add to a stored thread.

Clients send the whole conversation every run. Messages the server already holds are matched
by id and must say what the stored copy says; a contradiction is tampering and the run is
refused. On an existing thread only user, system and developer messages may be new, and tool
messages that answer an open call: an assistant message the server never produced is refused.
A new thread accepts whatever history the client starts it with.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from protocol.errors import Refusal
from protocol.input import Message as InputMessage
from protocol.transcript import Transcript
from protocol.versions import flatten_content

Message = dict[str, Any]


def merge_history(
    transcript: Transcript,
    incoming: Iterable[InputMessage],
    *,
    new_thread: bool,
    answered_by_server: set[str],
) -> list[Message]:
    """Append the client's new messages to ``transcript``; return them.

    ``answered_by_server``: tool calls the server answers in this run (resumed approvals);
    CopilotKit also sends a tool message for them, which would give a call two results.
    """
    added: list[Message] = []
    for message in incoming:
        wire = message.to_wire()
        stored = transcript.get(message.id)
        if stored is not None:
            if _meaning(stored) != _meaning(wire):
                raise _tampered(f"message {message.id!r} differs from the stored one")
            continue
        if message.role == "tool" and message.tool_call_id in answered_by_server:
            continue
        if not new_thread:
            _check_new_message(transcript, wire)
        transcript.append(wire)
        added.append(wire)
    return added


def _check_new_message(transcript: Transcript, message: Message) -> None:
    role = message["role"]
    if role == "assistant":
        raise _tampered(f"assistant message {message['id']!r} was not produced by this server")
    if role == "tool":
        call_id = message["toolCallId"]
        if call_id not in _open_tool_calls(transcript.messages):
            raise _tampered(f"tool message {message['id']!r} answers no open tool call")


def _open_tool_calls(messages: list[Message]) -> set[str]:
    calls = {
        call["id"]
        for message in messages
        if message["role"] == "assistant"
        for call in message.get("toolCalls") or ()
    }
    return calls - {message["toolCallId"] for message in messages if message["role"] == "tool"}


def _meaning(message: Message) -> tuple[Any, ...]:
    """What a message says, without presentation (names, metadata) or encoding choices."""
    content = message.get("content")
    if isinstance(content, list):
        content = flatten_content(content)  # 0.0.59 clients hold array results as text
    calls = tuple(
        (call["id"], call["function"]["name"], call["function"]["arguments"])
        for call in message.get("toolCalls") or ()
    )
    return message["role"], content or "", calls, message.get("toolCallId")


def _tampered(detail: str) -> Refusal:
    return Refusal("tampered_history", f"the history contradicts the thread: {detail}")
