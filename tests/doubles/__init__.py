"""Test doubles for services that cannot run on our machines (see DESIGN.md, "Real parts").

Everything else in the test suite talks to the real thing.
"""

from tests.doubles.ollama import (
    DEFAULT_MODEL,
    OllamaDouble,
    ScriptedReply,
    text_reply,
    thinking_reply,
    tool_call_reply,
)

__all__ = [
    "DEFAULT_MODEL",
    "OllamaDouble",
    "ScriptedReply",
    "text_reply",
    "thinking_reply",
    "tool_call_reply",
]
