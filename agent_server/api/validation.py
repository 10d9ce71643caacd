"""Request validation errors as people read them: one line per problem, located by where it
is in the request, unknown fields named with the names that are accepted there."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel
from starlette.requests import Request

MAX_PROBLEMS = 5
_JSON_TYPES = ("application/json",)


def describe_request_error(request: Request, error: RequestValidationError) -> tuple[str, str]:
    """``(code, message)`` for a request FastAPI could not validate."""
    problems = error.errors()
    if any(problem["type"] == "json_invalid" for problem in problems):
        detail = next(p for p in problems if p["type"] == "json_invalid").get("ctx", {})
        return "invalid_json", f"the body is not valid JSON: {detail.get('error', 'malformed')}"
    if any(problem["loc"][:1] == ("body",) for problem in problems) and not _sends_json(request):
        return "unsupported_media_type", "send the body as application/json"
    model = _body_model(request)
    lines: list[str] = []
    for problem in problems:
        line = _describe(problem, model)
        if line not in lines:
            lines.append(line)
    if len(lines) > MAX_PROBLEMS:
        lines = [*lines[:MAX_PROBLEMS], f"... and {len(lines) - MAX_PROBLEMS} more"]
    return "invalid_input", "; ".join(lines)


def _sends_json(request: Request) -> bool:
    content_type = request.headers.get("content-type")
    if content_type is None:
        return True  # FastAPI reads a body without a content type as JSON
    media = content_type.split(";", 1)[0].strip().lower()
    return media in _JSON_TYPES or media.endswith("+json")


def _body_model(request: Request) -> type[BaseModel] | None:
    route = request.scope.get("route")
    field = getattr(route, "body_field", None)
    annotation = getattr(getattr(field, "field_info", None), "annotation", None)
    return (
        annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
    )


def _describe(problem: dict[str, Any], model: type[BaseModel] | None) -> str:
    where, *path = problem["loc"]
    location = _path(path)
    if where == "query":
        location = f"query parameter {location}"
    elif where == "path":
        location = f"path parameter {location}"
    elif where == "header":
        location = f"header {location}"
    if problem["type"] == "extra_forbidden" and where == "body":
        return f"{location}: unknown field{_accepted(model, path)}"
    if problem["type"] == "missing" and where == "body" and not path:
        return "the body is required"
    message = str(problem["msg"]).removeprefix("Value error, ")
    return f"{location}: {message}" if location else message


def _path(path: Sequence[Any]) -> str:
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text = f"{text}.{part}" if text else str(part)
    return text


def _accepted(model: type[BaseModel] | None, path: Sequence[Any]) -> str:
    """`` (did you mean …?) accepted: a, b, c`` for the object holding ``path[-1]``."""
    holder = _model_at(model, path[:-1])
    if holder is None:
        return ""
    names = [field.alias or name for name, field in holder.model_fields.items()]
    close = difflib.get_close_matches(str(path[-1]), names, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return f"{hint}; accepted: {', '.join(names)}"


def _model_at(model: type[BaseModel] | None, path: Sequence[Any]) -> type[BaseModel] | None:
    """The model of the object at ``path`` inside ``model`` (list items included)."""
    for part in path:
        if model is None:
            return None
        if isinstance(part, int):
            continue  # an item of the list field named by the previous part
        field = next((f for name, f in model.model_fields.items() if part in (name, f.alias)), None)
        if field is None:
            return None
        model = _inner_model(field.annotation)
    return model


def _inner_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for argument in getattr(annotation, "__args__", ()):
        found = _inner_model(argument)
        if found is not None:
            return found
    return None
