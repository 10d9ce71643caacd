"""The tools every Citadel agent has: small, safe, and enough to exercise the tool loop."""

from __future__ import annotations

import ast
import math
import operator
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from agent_server.runtime.tools import BackendTool, ToolContext, ToolFailure


async def get_current_time(arguments: dict[str, Any], context: ToolContext) -> dict[str, Any]:
    name = arguments.get("timezone") or "UTC"
    try:
        zone = ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ToolFailure(
            f"unknown time zone {name!r}; use an IANA name like Europe/Paris"
        ) from None
    now = datetime.now(zone)
    return {
        "timezone": name,
        "iso": now.isoformat(timespec="seconds"),
        "weekday": now.strftime("%A"),
    }


_BINARY = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_FUNCTIONS = {
    "sqrt": math.sqrt,
    "abs": abs,
    "round": round,
    "min": min,
    "max": max,
    "log": math.log,
    "log10": math.log10,
    "exp": math.exp,
    "sin": math.sin,
    "cos": math.cos,
    "tan": math.tan,
}
_CONSTANTS = {"pi": math.pi, "e": math.e}
_MAX_MAGNITUDE = 1e100  # keeps ** and * from building numbers that take seconds to print


def evaluate(expression: str) -> float | int:
    """Arithmetic only: numbers, + - * / // % **, parentheses, a few math functions."""
    try:
        tree = ast.parse(expression, mode="eval")
    except SyntaxError:
        raise ToolFailure(f"not an arithmetic expression: {expression!r}") from None
    return _evaluate(tree.body)


def _evaluate(node: ast.AST) -> Any:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.Name) and node.id in _CONSTANTS:
        return _CONSTANTS[node.id]
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_evaluate(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) * math.log10(abs(left) + 2) > 100:
            raise ToolFailure("result too large")
        try:
            result = _BINARY[type(node.op)](left, right)
        except ZeroDivisionError:
            raise ToolFailure("division by zero") from None
        except OverflowError:
            raise ToolFailure("result too large") from None
        if abs(result) > _MAX_MAGNITUDE:
            raise ToolFailure("result too large")
        return result
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in _FUNCTIONS
        and not node.keywords
    ):
        try:
            return _FUNCTIONS[node.func.id](*(_evaluate(arg) for arg in node.args))
        except (ValueError, TypeError) as error:
            raise ToolFailure(f"{node.func.id}: {error}") from None
    raise ToolFailure(f"unsupported expression element: {ast.unparse(node)!r}")


async def calculate(arguments: dict[str, Any], context: ToolContext) -> dict[str, Any]:
    expression = arguments["expression"]
    return {"expression": expression, "result": evaluate(expression)}


async def update_plan(arguments: dict[str, Any], context: ToolContext) -> dict[str, Any]:
    # Shared state in the shape CopilotKit's generative-UI examples render: {steps: [...]}.
    if not isinstance(context.state, dict):
        raise ToolFailure("the shared state is not an object, so it cannot hold a plan")
    context.state["steps"] = arguments["steps"]
    done = sum(step["status"] == "completed" for step in arguments["steps"])
    return {"steps": len(arguments["steps"]), "completed": done}


BUILTIN_TOOLS = (
    BackendTool(
        "get_current_time",
        "Get the current date and time in a time zone.",
        {
            "type": "object",
            "properties": {
                "timezone": {
                    "type": "string",
                    "description": "IANA time zone, e.g. Europe/Paris. Default UTC.",
                    "maxLength": 64,
                }
            },
        },
        get_current_time,
    ),
    BackendTool(
        "calculate",
        "Evaluate an arithmetic expression exactly, e.g. (12.5 * 4) / 3 or sqrt(2).",
        {
            "type": "object",
            "properties": {"expression": {"type": "string", "maxLength": 200}},
            "required": ["expression"],
        },
        calculate,
    ),
    BackendTool(
        "update_plan",
        "Show the user a plan as a list of steps, and update their status as work progresses.",
        {
            "type": "object",
            "properties": {
                "steps": {
                    "type": "array",
                    "maxItems": 20,
                    "items": {
                        "type": "object",
                        "properties": {
                            "description": {"type": "string", "maxLength": 200},
                            "status": {"enum": ["pending", "completed"]},
                        },
                        "required": ["description", "status"],
                    },
                }
            },
            "required": ["steps"],
        },
        update_plan,
    ),
)
