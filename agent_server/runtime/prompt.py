"""Turn an AG-UI conversation into what a chat model reads.

The system prompt comes first and stays byte-identical between turns of a thread, so
backends that cache prompt prefixes (llama.cpp, vLLM, Ollama) reuse their work.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from agent_server.models.base import ChatMessage, ToolCallRequest
from protocol.input import Context

UNANSWERED_TOOL_CALL = "No result: this tool call was not answered."


def system_prompt(base: str, context: Sequence[Context], state: Any, extra: Sequence[str]) -> str:
    sections = [base.strip(), *(text.strip() for text in extra if text.strip())]
    if context:
        lines = [f"- {item.description}: {item.value}" for item in context]
        sections.append("Context from the application:\n" + "\n".join(lines))
    if state not in (None, {}, []):
        sections.append("Shared application state (JSON):\n" + orjson.dumps(state).decode())
    return "\n\n".join(section for section in sections if section)


def chat_messages(system: str, messages: Sequence[dict[str, Any]]) -> list[ChatMessage]:
    """Model messages for a transcript: system and developer text folded into the system
    prompt (small models' templates take one), every tool call paired with a result."""
    instructions = [system] if system else []
    conversation: list[ChatMessage] = []
    tool_names: dict[str, str] = {}
    answered: set[str] = set()
    for message in messages:
        role = message["role"]
        if role in ("system", "developer"):
            instructions.append(message["content"])
        elif role == "user":
            conversation.append(ChatMessage("user", user_text(message["content"])))
        elif role == "assistant":
            calls = tuple(
                ToolCallRequest(call["id"], call["function"]["name"], call["function"]["arguments"])
                for call in message.get("toolCalls") or ()
            )
            tool_names.update((call.id, call.name) for call in calls)
            conversation.append(ChatMessage("assistant", message.get("content") or "", calls))
        elif role == "tool" and message["toolCallId"] in tool_names:
            call_id = message["toolCallId"]
            if call_id in answered:
                continue  # backends reject two results for one call
            answered.add(call_id)
            conversation.append(
                ChatMessage(
                    "tool",
                    user_text(message["content"]),
                    tool_call_id=call_id,
                    tool_name=tool_names[call_id],
                )
            )
        # reasoning and activity messages are the UI's, not the model's
    conversation = _answer_every_call(conversation, answered)
    system_message = ChatMessage("system", "\n\n".join(instructions))
    return [system_message, *conversation] if instructions else conversation


def _answer_every_call(conversation: list[ChatMessage], answered: set[str]) -> list[ChatMessage]:
    # Chat APIs reject an assistant tool call with no result (a frontend tool the user never
    # answered, a run stopped mid-call): give each a placeholder right after its results.
    result: list[ChatMessage] = []
    missing: list[ToolCallRequest] = []
    for message in conversation:
        if message.role != "tool" and missing:
            result.extend(_placeholder(call) for call in missing)
            missing = []
        result.append(message)
        if message.role == "assistant":
            missing = [call for call in message.tool_calls if call.id not in answered]
    result.extend(_placeholder(call) for call in missing)
    return result


def _placeholder(call: ToolCallRequest) -> ChatMessage:
    return ChatMessage("tool", UNANSWERED_TOOL_CALL, tool_call_id=call.id, tool_name=call.name)


def user_text(content: Any) -> str:
    """The text of a message's content (a string or AG-UI content parts)."""
    if isinstance(content, str):
        return content
    # Text models read the text parts; media is named, never inlined as base64.
    return "\n".join(
        part["text"] if part["type"] == "text" else f"[{part['type']} attachment]"
        for part in content
    )
