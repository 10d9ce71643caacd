"""Chat model backends: ``embedded`` (llama.cpp in-process), ``ollama``, ``openai``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from agent_server.models.base import ChatModel

if TYPE_CHECKING:
    from agent_server.config import Settings


def create_chat_model(settings: Settings) -> ChatModel:
    """The backend the settings name; imports only what that backend needs."""
    if settings.llm == "embedded":
        from agent_server.models.embedded import EmbeddedChatModel

        return EmbeddedChatModel(
            settings.llm_model,
            n_ctx=settings.llm_context,
            n_threads=settings.llm_threads,
            max_tokens=settings.llm_max_tokens or 512,
        )
    from agent_server.backends.resilience import CircuitBreaker, RetryPolicy, Timeouts

    timeouts = Timeouts(connect=settings.llm_connect_timeout, idle=settings.llm_idle_timeout)
    retry = RetryPolicy(attempts=settings.llm_retries + 1)
    assert settings.llm_url and settings.llm_model  # Settings.problems() guarantees both
    if settings.llm == "ollama":
        from agent_server.models.ollama import OllamaChatModel

        return OllamaChatModel(
            settings.llm_url,
            settings.llm_model,
            keep_alive=settings.llm_keep_alive,
            timeouts=timeouts,
            retry=retry,
            breaker=CircuitBreaker(),
        )
    from agent_server.models.openai import OpenAIChatModel

    api_key = settings.llm_api_key.get_secret_value() if settings.llm_api_key else None
    return OpenAIChatModel(
        settings.llm_url,
        settings.llm_model,
        api_key,
        timeouts=timeouts,
        retry=retry,
        breaker=CircuitBreaker(),
    )
