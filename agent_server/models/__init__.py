"""Chat model backends, by the name ``CITADEL_LLM`` gives them.

Each backend is a module of this package with ``from_settings(settings) -> ChatModel``,
imported only when configured. A new backend is its module plus one line in
:data:`BACKENDS` (and its name among ``CITADEL_LLM``'s values in the settings).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from agent_server.models.base import ChatModel

if TYPE_CHECKING:
    from agent_server.config import Settings

BACKENDS = {
    "embedded": "agent_server.models.embedded",  # llama.cpp in this process
    "ollama": "agent_server.models.ollama",
    "openai": "agent_server.models.openai",  # any OpenAI-compatible server
}


def create_chat_model(settings: Settings) -> ChatModel:
    """The backend the settings name."""
    return importlib.import_module(BACKENDS[settings.llm]).from_settings(settings)
