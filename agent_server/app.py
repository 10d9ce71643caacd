"""The application: settings in, a Starlette app out. Everything is wired in the lifespan."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import HTTPConnection

from agent_server import __version__
from agent_server.api import agui, health
from agent_server.api.http import http_error_handler, input_error_handler
from agent_server.auth.principals import LOCAL_USER, Principal
from agent_server.config import ConfigError, Settings
from agent_server.models import create_chat_model
from agent_server.models.base import ChatModel
from agent_server.runs.manager import RunLimits, RunManager
from agent_server.runtime.builtin_tools import BUILTIN_TOOLS
from agent_server.runtime.loop import DEFAULT_SYSTEM_PROMPT, Agent, AgentSettings
from agent_server.runtime.tools import ToolRegistry
from agent_server.store.threads import MemoryThreadStore, ThreadStore
from protocol.input import InputError, InputLimits

logger = logging.getLogger("citadel")


@dataclass
class Services:
    """Everything a request handler may use; one instance per app, built in the lifespan."""

    settings: Settings
    model: ChatModel
    store: ThreadStore
    agent: Agent
    runs: RunManager
    tools: ToolRegistry
    input_limits: InputLimits

    def authenticate(self, connection: HTTPConnection) -> Principal:
        return LOCAL_USER

    def capabilities(self) -> dict[str, Any]:
        return {
            "identity": {
                "name": "citadel",
                "type": "citadel",
                "version": __version__,
                "provider": self.model.provider,
            },
            "transport": {
                "streaming": True,
                "websocket": True,
                "httpBinary": False,
                "pushNotifications": False,
                "resumable": True,
            },
            "tools": {
                "supported": True,
                "clientProvided": True,
                "parallelCalls": True,
                "items": [
                    {
                        "name": tool.name,
                        "description": tool.description,
                        "parameters": tool.parameters,
                    }
                    for tool in self.tools
                ],
            },
            "state": {"snapshots": True, "deltas": True, "memory": True, "persistentState": True},
            "reasoning": {"supported": True, "streaming": True},
            "execution": {"maxIterations": self.agent.settings.max_tool_rounds},
            "humanInTheLoop": {"supported": True, "approvals": True, "interrupts": True},
        }


def build_tools(settings: Settings) -> ToolRegistry:
    try:
        return ToolRegistry(BUILTIN_TOOLS).requiring_approval(settings.approval_tools)
    except ValueError as error:
        raise ConfigError(f"CITADEL_APPROVAL_TOOLS: {error}") from None


def default_tool_rounds(model: ChatModel) -> int:
    # Small in-process models call a tool again on its own result: one round, then answer.
    return 1 if model.provider == "embedded" else 8


def build_services(settings: Settings, model: ChatModel, tools: ToolRegistry) -> Services:
    store = MemoryThreadStore()
    agent = Agent(
        model,
        tools,
        store,
        AgentSettings(
            system_prompt=settings.system_prompt or DEFAULT_SYSTEM_PROMPT,
            max_tool_rounds=settings.max_tool_rounds or default_tool_rounds(model),
            max_tokens=settings.llm_max_tokens,
            temperature=settings.llm_temperature,
        ),
    )
    runs = RunManager(
        agent,
        RunLimits(
            disconnect_grace=settings.disconnect_grace,
            run_timeout=settings.run_timeout,
            log_retention=settings.event_log_retention,
        ),
    )
    limits = InputLimits(max_messages=settings.max_messages, max_tools=settings.max_tools)
    return Services(settings, model, store, agent, runs, tools, limits)


def create_app(settings: Settings | None = None, *, model: ChatModel | None = None) -> Starlette:
    """The ASGI app. ``model`` replaces the configured chat backend (benchmarks, embedding)."""
    settings = settings or Settings()
    problems = settings.problems()
    if problems:
        raise ConfigError("; ".join(problems))
    tools = build_tools(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        chat_model = model or create_chat_model(settings)
        services = build_services(settings, chat_model, tools)
        app.state.services = services
        if settings.auth == "off":
            logger.warning("authentication is OFF: every request acts as the local user")
        try:
            yield
        finally:
            await services.runs.shutdown()
            await chat_model.aclose()

    middleware = []
    if settings.cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=settings.cors_origins,
                allow_methods=["GET", "POST", "OPTIONS"],
                allow_headers=["Authorization", "Content-Type", "Last-Event-ID"],
                allow_credentials="*" not in settings.cors_origins,
            )
        )
    return Starlette(
        routes=[*agui.routes, *health.routes],
        middleware=middleware,
        exception_handlers={InputError: input_error_handler, HTTPException: http_error_handler},
        lifespan=lifespan,
    )
