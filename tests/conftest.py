"""Shared fixtures: a Citadel server on loopback, backed by the Ollama test double."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

from agent_server.app import create_app
from agent_server.backends.resilience import RetryPolicy, Timeouts
from agent_server.config import Settings
from agent_server.models.base import ChatModel
from agent_server.models.ollama import OllamaChatModel
from tests.doubles.ollama import DEFAULT_MODEL, OllamaDouble
from tests.support.database import isolated_database_url
from tests.support.servers import serve

# Property tests draw the same examples on every run (derandomize: seeded from the test
# itself), replay nothing from a local example database, and are not judged by the clock
# (no per-example deadline, no "too slow" health check): a slow machine is not a failure.
hypothesis_settings.register_profile(
    "citadel",
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
hypothesis_settings.load_profile("citadel")


@contextlib.asynccontextmanager
async def citadel(model: ChatModel, port: int = 0, **settings: Any) -> AsyncIterator[str]:
    """A real Citadel server on 127.0.0.1 (on ``port`` if given) with ``model``, a fresh schema
    of the local Postgres and a fresh data directory (unless the settings say otherwise);
    yields its base URL. The demo docs are not ingested unless ``demo_docs`` is given."""
    async with contextlib.AsyncExitStack() as stack:
        settings = await isolated_settings(stack, settings)
        app = create_app(Settings(**settings), model=model)
        yield await stack.enter_async_context(serve(app, port))


async def isolated_settings(
    stack: contextlib.AsyncExitStack, settings: dict[str, Any]
) -> dict[str, Any]:
    """``settings`` with a fresh schema of the local Postgres and a fresh data directory
    (unless they say otherwise, each gone when ``stack`` closes), and no demo docs unless
    ``demo_docs`` is given."""
    settings = dict(settings)
    if settings.get("store") != "memory" and "database_url" not in settings:
        settings["database_url"] = await stack.enter_async_context(isolated_database_url())
    if "data_dir" not in settings:
        settings["data_dir"] = stack.enter_context(tempfile.TemporaryDirectory())
    settings.setdefault("demo_docs", None)
    return settings


def double_model(ollama: OllamaDouble, idle: float = 10.0) -> OllamaChatModel:
    """The real Ollama backend pointed at the double; no retries, so errors show at once."""
    return OllamaChatModel(
        ollama.url,
        DEFAULT_MODEL,
        retry=RetryPolicy(attempts=1),
        timeouts=Timeouts(connect=2, first_byte=10, idle=idle),
    )


@pytest.fixture
async def ollama() -> AsyncIterator[OllamaDouble]:
    async with OllamaDouble() as double:
        yield double
