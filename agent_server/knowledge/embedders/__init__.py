"""Embedders: the embedded ONNX model, Ollama, or any OpenAI-compatible server."""

from __future__ import annotations

from typing import TYPE_CHECKING

from agent_server.knowledge.embedders.base import Embedder
from agent_server.urls import redact_url

if TYPE_CHECKING:  # the ONNX export imports this package in a venv without the server's deps
    from pydantic import SecretStr

    from agent_server.backends.resilience import ResilientHTTP
    from agent_server.config import Settings


def create_embedder(settings: Settings) -> Embedder:
    """The embedder the settings name (not cached; see cache.CachedEmbedder)."""
    if settings.embedder == "embedded":
        from agent_server.knowledge.embedders.embedded import EmbeddedEmbedder

        return EmbeddedEmbedder(precision=settings.embed_precision)
    from agent_server.knowledge.embedders.http import OLLAMA, OPENAI, HTTPEmbedder

    assert settings.embed_url and settings.embed_model  # Settings.problems() guarantees both
    dialect = OLLAMA if settings.embedder == "ollama" else OPENAI
    http = knowledge_client(
        f"{dialect.provider} at {redact_url(settings.embed_url)}", settings.embed_api_key, settings
    )
    return HTTPEmbedder(
        dialect, settings.embed_url, settings.embed_model, http, settings.embed_batch_size
    )


def knowledge_client(name: str, api_key: SecretStr | None, settings: Settings) -> ResilientHTTP:
    """The resilient HTTP client of a knowledge-base server (embedder, reranker): the chat
    model's connect timeout and retries, ``CITADEL_EMBED_TIMEOUT`` for a whole answer."""
    from agent_server.backends.resilience import (
        CircuitBreaker,
        ResilientHTTP,
        RetryPolicy,
        Timeouts,
    )

    return ResilientHTTP(
        name,
        timeouts=Timeouts(connect=settings.llm_connect_timeout, first_byte=settings.embed_timeout),
        retry=RetryPolicy(attempts=settings.llm_retries + 1),
        breaker=CircuitBreaker(),
        api_key=api_key.get_secret_value() if api_key else None,
    )
