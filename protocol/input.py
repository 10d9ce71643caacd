"""``RunAgentInput``: parse and validate what a client asks for, before anything happens.

Validation is strict (wrong types are errors, not coerced) and complete: a request that gets
past :func:`parse_run_input` is safe to act on, so a rejected one changes nothing. Unknown
fields are ignored for forward compatibility; unknown message roles are not.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import orjson
from jsonschema import SchemaError
from jsonschema.validators import validator_for
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator
from pydantic.alias_generators import to_camel

from protocol.errors import Refusal
from protocol.text import PROBLEM, unstorable

# Ids travel in SSE ``id:`` lines and log keys: printable ASCII without spaces.
ID_PATTERN = r"^[\x21-\x7e]{1,256}$"
_TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

Id = Annotated[str, Field(pattern=ID_PATTERN)]


class StrictModel(BaseModel):
    """Strict types, unknown fields ignored, camelCase on the wire."""

    model_config = ConfigDict(
        strict=True, frozen=True, extra="ignore", alias_generator=to_camel, populate_by_name=True
    )

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


# Content parts -------------------------------------------------------------------------------


class TextPart(StrictModel):
    type: Literal["text"]
    text: str


class MediaSource(StrictModel):
    type: Literal["data", "url", "file"]
    value: str
    mime_type: str | None = None
    provider: str | None = None


class MediaPart(StrictModel):
    type: Literal["image", "audio", "video", "document"]
    source: MediaSource
    id: str | None = None
    metadata: dict[str, Any] | None = None


ContentPart = Annotated[TextPart | MediaPart, Field(discriminator="type")]


# Messages ------------------------------------------------------------------------------------


class FunctionCall(StrictModel):
    name: str
    arguments: str


class ToolCall(StrictModel):
    id: Id
    type: Literal["function"] = "function"
    function: FunctionCall
    encrypted_value: str | None = None


class _Message(StrictModel):
    id: Id
    metadata: dict[str, Any] | None = None
    subagent_run_id: str | None = None


class DeveloperMessage(_Message):
    role: Literal["developer"]
    content: str
    name: str | None = None
    encrypted_value: str | None = None


class SystemMessage(_Message):
    role: Literal["system"]
    content: str
    name: str | None = None
    encrypted_value: str | None = None


class AssistantMessage(_Message):
    role: Literal["assistant"]
    content: str | None = None
    tool_calls: list[ToolCall] | None = None
    name: str | None = None
    encrypted_value: str | None = None


class UserMessage(_Message):
    role: Literal["user"]
    content: str | list[ContentPart]
    name: str | None = None


class ToolMessage(_Message):
    role: Literal["tool"]
    content: str | list[ContentPart]
    tool_call_id: Id
    error: str | None = None
    encrypted_value: str | None = None


class ActivityMessage(_Message):
    role: Literal["activity"]
    activity_type: str
    content: dict[str, Any]


class ReasoningMessage(_Message):
    role: Literal["reasoning"]
    content: str
    encrypted_value: str | None = None


Message = Annotated[
    DeveloperMessage
    | SystemMessage
    | AssistantMessage
    | UserMessage
    | ToolMessage
    | ActivityMessage
    | ReasoningMessage,
    Field(discriminator="role"),
]
MESSAGE_ADAPTER: TypeAdapter[Message] = TypeAdapter(Message)


# Tools, context, resume ----------------------------------------------------------------------


class Tool(StrictModel):
    name: str
    description: str
    parameters: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None

    @field_validator("name")
    @classmethod
    def _name_is_callable(cls, name: str) -> str:
        if not _TOOL_NAME.match(name):
            raise ValueError("tool names are 1-64 letters, digits, '_' or '-'")
        return name

    @field_validator("parameters")
    @classmethod
    def _parameters_are_a_schema(cls, schema: dict[str, Any] | None) -> dict[str, Any] | None:
        if schema is None:
            return None
        try:
            validator_for(schema).check_schema(schema)
        except SchemaError as error:
            where = "/".join(str(part) for part in error.absolute_path) or "(root)"
            raise ValueError(f"not a valid JSON Schema at {where}: {error.message}") from None
        if schema.get("type", "object") != "object":
            raise ValueError("tool parameters must be an object schema")
        return schema


class Context(StrictModel):
    description: str
    value: str


class ResumeEntry(StrictModel):
    interrupt_id: str
    status: Literal["resolved", "cancelled"]
    payload: Any = None
    metadata: dict[str, Any] | None = None


class RunAgentInput(StrictModel):
    thread_id: Id
    run_id: Id
    messages: list[Message]
    protocol_version: str | None = Field(default=None, pattern=r"^\d+(\.\d+)*$")
    parent_run_id: Id | None = None
    state: Any = None
    tools: list[Tool] = []
    context: list[Context] = []
    forwarded_props: Any = None
    resume: list[ResumeEntry] = []

    @field_validator("tools")
    @classmethod
    def _unique_tool_names(cls, tools: list[Tool]) -> list[Tool]:
        names = [tool.name for tool in tools]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"duplicate tool names: {', '.join(duplicates)}")
        return tools

    @field_validator("resume")
    @classmethod
    def _unique_resume_ids(cls, resume: list[ResumeEntry]) -> list[ResumeEntry]:
        ids = [entry.interrupt_id for entry in resume]
        if len(ids) != len(set(ids)):
            raise ValueError("each interrupt may be answered once")
        return resume


# Parsing -------------------------------------------------------------------------------------


class InputError(Refusal):
    """A RunAgentInput (or any JSON body) the server refuses before acting on it."""


@dataclass(frozen=True, slots=True)
class InputLimits:
    max_messages: int = 1_000
    max_tools: int = 128
    max_context_items: int = 128


def parse_json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise InputError("invalid_json", f"request body is not valid JSON: {error}") from None


def parse_run_input(body: bytes | Any, limits: InputLimits = InputLimits()) -> RunAgentInput:
    """Validate a RunAgentInput from raw bytes or already-decoded JSON."""
    raw = isinstance(body, bytes | bytearray)
    data = parse_json(body) if raw else body
    if not isinstance(data, dict):
        raise InputError("invalid_input", "RunAgentInput must be a JSON object")
    _check_counts(data, limits)
    # From bytes, orjson has refused lone surrogates, and a NUL can only be an escape.
    if not raw or b"\\u0000" in body:
        where = unstorable(data)
        if where is not None:
            raise InputError("invalid_input", f"{where or 'the body'}: {PROBLEM}")
    try:
        return RunAgentInput.model_validate(data)
    except ValidationError as error:
        raise InputError("invalid_input", describe_validation_error(error, data)) from None


def _check_counts(data: dict[str, Any], limits: InputLimits) -> None:
    # Checked before model validation so an oversized request costs nothing to refuse.
    for key, limit in (
        ("messages", limits.max_messages),
        ("tools", limits.max_tools),
        ("context", limits.max_context_items),
    ):
        value = data.get(key)
        if isinstance(value, list) and len(value) > limit:
            raise InputError(
                "too_many_" + key, f"{key} has {len(value)} items; the limit is {limit}"
            )


def describe_validation_error(error: ValidationError, data: Any, limit: int = 5) -> str:
    """One readable line per problem, located by its JSON path in the request."""
    lines: list[str] = []
    for problem in error.errors(include_url=False):
        location = _json_path(data, problem["loc"])
        line = f"{location}: {_problem_message(problem)}" if location else _problem_message(problem)
        if line not in lines:
            lines.append(line)
    if len(lines) > limit:
        lines = [*lines[:limit], f"... and {len(lines) - limit} more"]
    return "; ".join(lines)


def _problem_message(problem: Any) -> str:
    kind, ctx = problem["type"], problem.get("ctx") or {}
    if kind == "union_tag_invalid":
        field_name = ctx["discriminator"].strip("'")
        return f"unknown {field_name} {ctx['tag']!r} (expected {ctx['expected_tags']})"
    if kind == "string_pattern_mismatch" and ctx.get("pattern") == ID_PATTERN:
        return "ids are 1-256 printable ASCII characters without spaces"
    return str(problem["msg"]).removeprefix("Value error, ")


def _json_path(data: Any, loc: tuple[Any, ...]) -> str:
    # pydantic's loc also names union branches ("user", "str", "list[...]"); keep only the
    # steps that exist in the request, so the path reads like the JSON the client sent.
    path, node, tag_seen = "", data, False
    for part in loc:
        if isinstance(node, list) and isinstance(part, int) and part < len(node):
            path, node, tag_seen = f"{path}[{part}]", node[part], False
        elif isinstance(node, dict) and part in node:
            path, node, tag_seen = (f"{path}.{part}" if path else str(part)), node[part], False
        elif isinstance(node, dict):
            if not tag_seen and part in (node.get("role"), node.get("type")):
                tag_seen = True  # the branch pydantic chose by discriminator
            else:
                return f"{path}.{part}" if path else str(part)  # a missing field
    return path
