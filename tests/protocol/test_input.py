import pytest

from protocol.input import InputError, InputLimits, parse_run_input

BASE = {"threadId": "t", "runId": "r", "messages": []}


def parse(**fields):
    return parse_run_input({**BASE, **fields})


def rejected(body, limits: InputLimits | None = None) -> InputError:
    with pytest.raises(InputError) as caught:
        parse_run_input(body, limits or InputLimits())
    return caught.value


def test_a_full_copilotkit_style_input_parses():
    run_input = parse(
        messages=[
            {"id": "s", "role": "system", "content": "be brief"},
            {"id": "u", "role": "user", "content": [{"type": "text", "text": "hi"}]},
            {
                "id": "a",
                "role": "assistant",
                "toolCalls": [
                    {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                ],
            },
            {"id": "t", "role": "tool", "toolCallId": "c", "content": "ok"},
        ],
        tools=[{"name": "f", "description": "d", "parameters": {"type": "object"}}],
        context=[{"description": "page", "value": "home"}],
        state={},
        forwardedProps={},
        protocolVersion="1.0",
        resume=[{"interruptId": "i", "status": "resolved", "payload": {"approved": True}}],
        someFutureField=1,
    )
    assert run_input.protocol_version == "1.0"
    assert [m.role for m in run_input.messages] == ["system", "user", "assistant", "tool"]
    assert run_input.messages[2].tool_calls[0].function.name == "f"


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"runId": "r", "messages": []}, "threadId: Field required"),
        ({**BASE, "threadId": 5}, "threadId: Input should be a valid string"),
        ({**BASE, "runId": "has space"}, "runId: ids are"),
        (
            {**BASE, "messages": [{"id": "m", "role": "robot", "content": "x"}]},
            "unknown role 'robot'",
        ),
        (
            {**BASE, "messages": [{"role": "user", "content": "x"}]},
            "messages[0].id: Field required",
        ),
        ({**BASE, "messages": {"id": "m"}}, "messages: Input should be a valid list"),
        (
            {**BASE, "messages": [{"id": "m", "role": "tool", "content": "x"}]},
            "messages[0].toolCallId: Field required",
        ),
        ({**BASE, "tools": [{"name": "bad name", "description": "d"}]}, "tools[0].name"),
        (
            {**BASE, "tools": [{"name": "f", "description": "d", "parameters": {"type": "nope"}}]},
            "not a valid JSON Schema",
        ),
        (
            {**BASE, "tools": [{"name": "f", "description": "d", "parameters": {"type": "array"}}]},
            "must be an object schema",
        ),
        ({**BASE, "tools": [{"name": "f", "description": "d"}] * 2}, "duplicate tool names: f"),
        ({**BASE, "resume": [{"interruptId": "i", "status": "maybe"}]}, "resume[0].status"),
        ({**BASE, "protocolVersion": "one"}, "protocolVersion"),
        ([1, 2], "must be a JSON object"),
    ],
)
def test_invalid_inputs_are_invalid_input_with_the_offending_path(body, fragment):
    error = rejected(body)
    assert error.code == "invalid_input"
    assert fragment in error.message


def test_malformed_json_is_invalid_json():
    error = rejected(b'{"threadId": ')
    assert error.code == "invalid_json"


def test_too_many_messages_is_refused_before_validation():
    body = {**BASE, "messages": [{"id": str(i), "role": "user", "content": "x"} for i in range(11)]}
    error = rejected(body, InputLimits(max_messages=10))
    assert error.code == "too_many_messages"
    parse_run_input({**body, "messages": body["messages"][:10]}, InputLimits(max_messages=10))
