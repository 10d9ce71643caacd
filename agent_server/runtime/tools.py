"""Backend tools: functions the runtime runs server-side when the model calls them.

Frontend tools (``RunAgentInput.tools``) are not here: the runtime streams those calls to the
client and ends the run. A backend tool may require a person's approval, in which case the
run ends with an interrupt and the tool runs only when the next run resolves it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import orjson
from jsonschema import Draft202012Validator

from agent_server.models.base import ToolSpec

logger = logging.getLogger(__name__)


class ToolFailure(Exception):
    """A failure the model should read and may recover from (bad input, nothing found)."""


@dataclass
class ToolContext:
    """What a tool may see and change: the run it serves, on whose behalf, and the shared
    state."""

    thread_id: str
    run_id: str
    state: Any  # mutable JSON; the runtime streams whatever the tool changes
    owner: str = ""  # the user the run acts for: who a tool's changes are audited as


ToolHandler = Callable[[dict[str, Any], ToolContext], Awaitable[Any]]


@dataclass(frozen=True)
class BackendTool:
    name: str
    description: str
    parameters: dict[str, Any]
    handler: ToolHandler
    requires_approval: bool = False
    timeout: float = 30.0
    _validator: Draft202012Validator = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_validator", Draft202012Validator(self.parameters))

    @property
    def spec(self) -> ToolSpec:
        return ToolSpec(self.name, self.description, self.parameters)

    async def invoke(self, arguments_json: str, context: ToolContext) -> str:
        """Run the tool; every failure becomes a result the model can read."""
        try:
            arguments = orjson.loads(arguments_json or "{}")
        except orjson.JSONDecodeError:
            return error_result(f"arguments are not valid JSON: {arguments_json[:200]}")
        problems = [error.message for error in self._validator.iter_errors(arguments)]
        if problems:
            return error_result("invalid arguments: " + "; ".join(problems[:3]))
        try:
            async with asyncio.timeout(self.timeout):
                result = await self.handler(arguments, context)
        except ToolFailure as failure:
            return error_result(str(failure))
        except TimeoutError:
            return error_result(f"{self.name} did not finish within {self.timeout:g} s")
        except Exception:
            # A broken tool must not end the run: the model reads the failure and moves on.
            logger.exception("tool %s failed", self.name)
            return error_result(f"{self.name} failed unexpectedly")
        return result if isinstance(result, str) else orjson.dumps(result).decode()


def error_result(message: str) -> str:
    return orjson.dumps({"error": message}).decode()


def is_error_result(result: str) -> bool:
    """Whether a tool answered with :func:`error_result` (or the same shape)."""
    return result.startswith('{"error":')


class ToolRegistry:
    def __init__(self, tools: Iterable[BackendTool] = ()) -> None:
        self._tools = {tool.name: tool for tool in tools}

    def get(self, name: str) -> BackendTool | None:
        return self._tools.get(name)

    def __contains__(self, name: str) -> bool:
        return name in self._tools

    def __iter__(self) -> Iterator[BackendTool]:
        return iter(self._tools.values())

    def requiring_approval(self, names: Iterable[str]) -> ToolRegistry:
        """A copy in which the named tools need a person's approval before they run."""
        names = set(names)
        unknown = names - self._tools.keys()
        if unknown:
            raise ValueError(f"approval configured for unknown tools: {', '.join(sorted(unknown))}")
        return ToolRegistry(
            replace(tool, requires_approval=tool.requires_approval or tool.name in names)
            for tool in self._tools.values()
        )
