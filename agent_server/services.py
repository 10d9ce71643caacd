"""The services one app shares between its requests, and how they are started and stopped."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any

from starlette.requests import HTTPConnection

from agent_server import __version__
from agent_server.auth.principals import LOCAL_USER, Principal
from agent_server.config import ConfigError, Settings
from agent_server.models.base import ChatModel
from agent_server.runs.manager import RunLimits, RunManager
from agent_server.runs.writer import EventWriter
from agent_server.runtime.builtin_tools import BUILTIN_TOOLS
from agent_server.runtime.loop import DEFAULT_SYSTEM_PROMPT, Agent, AgentSettings
from agent_server.runtime.tools import ToolRegistry
from agent_server.store.base import ThreadStore
from agent_server.store.memory import MemoryThreadStore
from protocol.input import InputLimits

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
    _resources: contextlib.AsyncExitStack

    def authenticate(self, connection: HTTPConnection) -> Principal:
        return LOCAL_USER

    async def aclose(self) -> None:
        """Stop runs first (their ends are stored), then what they wrote through."""
        await self.runs.shutdown()
        await self._resources.aclose()

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


async def start_services(settings: Settings, model: ChatModel, tools: ToolRegistry) -> Services:
    """Open the store (starting an embedded Postgres if no URL is set), then everything that
    runs on it. The model is the caller's; it is closed with the services."""
    resources = contextlib.AsyncExitStack()
    try:
        resources.push_async_callback(model.aclose)
        store = await _open_store(settings, resources)
        writer = EventWriter(store, interval=settings.event_flush_interval)
        writer.start()
        resources.push_async_callback(writer.close)
    except BaseException:
        await resources.aclose()
        raise
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
        store,
        writer,
        RunLimits(
            disconnect_grace=settings.disconnect_grace,
            run_timeout=settings.run_timeout,
            write_timeout=settings.db_write_timeout,
            log_retention=settings.event_log_retention,
        ),
    )
    limits = InputLimits(max_messages=settings.max_messages, max_tools=settings.max_tools)
    return Services(settings, model, store, agent, runs, tools, limits, resources)


async def _open_store(settings: Settings, resources: contextlib.AsyncExitStack) -> ThreadStore:
    if settings.store == "memory":
        logger.warning("CITADEL_STORE=memory: threads are lost when the process stops")
        return MemoryThreadStore()
    from agent_server.store.embedded import database_url
    from agent_server.store.migrations import upgrade
    from agent_server.store.postgres import open_pool
    from agent_server.store.postgres_threads import PostgresThreadStore

    url = await resources.enter_async_context(database_url(settings))
    pool = await open_pool(
        url,
        min_size=settings.db_pool_min,
        max_size=settings.db_pool_max,
        statement_timeout=settings.db_statement_timeout,
        connect_timeout=settings.db_connect_timeout,
    )
    resources.push_async_callback(pool.close)
    await upgrade(pool)
    store = PostgresThreadStore(pool, event_retention=settings.event_retention)
    await store.start()
    resources.push_async_callback(store.close)
    return store
