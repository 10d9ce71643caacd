"""The services one app shares between its requests, and how they are built from settings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from starlette.requests import HTTPConnection

from agent_server import __version__
from agent_server.auth.principals import LOCAL_USER, Principal
from agent_server.config import ConfigError, Settings
from agent_server.models.base import ChatModel
from agent_server.runs.manager import RunLimits, RunManager
from agent_server.runtime.builtin_tools import BUILTIN_TOOLS
from agent_server.runtime.loop import DEFAULT_SYSTEM_PROMPT, Agent, AgentSettings
from agent_server.runtime.tools import ToolRegistry
from agent_server.store.threads import MemoryThreadStore, ThreadStore
from protocol.input import InputLimits


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
