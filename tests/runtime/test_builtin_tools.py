import pytest

from agent_server.runtime.builtin_tools import BUILTIN_TOOLS, evaluate
from agent_server.runtime.tools import ToolContext, ToolFailure, ToolRegistry

TOOLS = ToolRegistry(BUILTIN_TOOLS)


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("2 + 3 * 4", 14),
        ("(12.5 * 4) / 3", 12.5 * 4 / 3),
        ("-2 ** 2", -4),
        ("sqrt(16)", 4.0),
        ("max(1, 7, 3)", 7),
        ("17 // 5 + 17 % 5", 5),
        ("round(pi, 2)", 3.14),
    ],
)
def test_arithmetic(expression, value):
    assert evaluate(expression) == value


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("__import__('os').system('x')", "unsupported"),
        ("open('/etc/passwd')", "unsupported"),
        ("(1).__class__", "unsupported"),
        ("9 ** 9 ** 9", "too large"),
        ("10.0 ** 400", "too large"),
        ("1 / 0", "division by zero"),
        ("sqrt(-1)", "sqrt"),
        ("2 +", "not an arithmetic expression"),
        ("True + 1", "unsupported"),
    ],
)
def test_anything_else_is_refused_safely(expression, message):
    with pytest.raises(ToolFailure, match=message):
        evaluate(expression)


async def test_tools_validate_arguments_and_report_failures_as_results():
    context = ToolContext("t", "r", {})
    calculate = TOOLS.get("calculate")
    assert (
        await calculate.invoke('{"expression": "6*7"}', context)
        == '{"expression":"6*7","result":42}'
    )
    assert "invalid arguments" in await calculate.invoke('{"expression": 5}', context)
    assert "not valid JSON" in await calculate.invoke('{"expression": ', context)
    clock = TOOLS.get("get_current_time")
    assert "unknown time zone" in await clock.invoke('{"timezone": "Mars/Olympus"}', context)


async def test_update_plan_writes_shared_state():
    context = ToolContext("t", "r", {"recipe": "soup"})
    steps = [{"description": "a", "status": "completed"}, {"description": "b", "status": "pending"}]
    result = await TOOLS.get("update_plan").invoke(
        '{"steps": [{"description": "a", "status": "completed"}, '
        '{"description": "b", "status": "pending"}]}',
        context,
    )
    assert result == '{"steps":2,"completed":1}'
    assert context.state == {"recipe": "soup", "steps": steps}
    refused = await TOOLS.get("update_plan").invoke('{"steps": []}', ToolContext("t", "r", [1]))
    assert "not an object" in refused


async def test_a_crashing_or_slow_tool_becomes_an_error_result():
    from agent_server.runtime.tools import BackendTool

    async def crash(arguments, context):
        raise RuntimeError("bug")

    async def slow(arguments, context):
        import asyncio

        await asyncio.Event().wait()  # never done: only the tool's timeout ends it

    context = ToolContext("t", "r", {})
    broken = BackendTool("broken", "d", {"type": "object"}, crash)
    sleepy = BackendTool("sleepy", "d", {"type": "object"}, slow, timeout=0.05)
    assert await broken.invoke("{}", context) == '{"error":"broken failed unexpectedly"}'
    assert "did not finish within 0.05 s" in await sleepy.invoke("{}", context)
