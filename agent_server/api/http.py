"""HTTP plumbing shared by the routes: bounded body reading and JSON errors."""

from __future__ import annotations

import base64
import binascii
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response

from agent_server.auth.principals import principal_of
from agent_server.store.base import Actor
from protocol.input import InputError, StrictModel, describe_validation_error, parse_json

if TYPE_CHECKING:
    from agent_server.services import Services

logger = logging.getLogger(__name__)


def services_of(connection: HTTPConnection) -> Services:
    return connection.app.state.services


def actor_of(request: Request) -> Actor:
    """Who is asking, and from where, for the audit log."""
    return Actor(principal_of(request).user_id, request.client.host if request.client else None)


def parse_body(model: type[StrictModel], data: Any) -> Any:
    """``data`` (a decoded JSON body) as ``model``, or a 422 naming every problem by path."""
    if not isinstance(data, dict):
        raise InputError(422, "invalid_input", "the body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise InputError(422, "invalid_input", describe_validation_error(error, data)) from None


STREAM_TIME_LIMIT_CLOSE = 4408  # 4000 + 408: the socket lived CITADEL_STREAM_MAX_DURATION


def encode_cursor(*parts: str) -> str:
    """An opaque page cursor holding ``parts``: clients hand it back, never read it."""
    return base64.urlsafe_b64encode(orjson.dumps(parts)).decode()


def decode_cursor(cursor: str, count: int) -> list[str] | None:
    """The ``count`` parts of a cursor :func:`encode_cursor` made; None if it is not one."""
    try:
        parts = orjson.loads(base64.urlsafe_b64decode(cursor))
    except (binascii.Error, ValueError):  # orjson.JSONDecodeError is a ValueError
        return None
    if not isinstance(parts, list) or len(parts) != count:
        return None
    return parts if all(isinstance(part, str) for part in parts) else None


def decode_dated_cursor(cursor: str, count: int) -> tuple[datetime, list[str]] | None:
    """A cursor of :func:`encode_cursor` whose first of ``count`` parts is a time: that time
    and the other parts; None if it is not one."""
    parts = decode_cursor(cursor, count)
    moment = parse_time(parts[0]) if parts is not None else None
    if parts is None or moment is None:
        return None
    return moment, parts[1:]


def parse_time(text: str) -> datetime | None:
    """An ISO-8601 time, in UTC if it names no offset; None if ``text`` is not one."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status, headers=headers)


async def read_json(request: Request, limit: int) -> Any:
    """The JSON body, refusing oversized or non-JSON bodies before reading them whole."""
    content_type = request.headers.get("content-type", "application/json")
    if "json" not in content_type.split(";", 1)[0]:
        raise InputError(415, "unsupported_media_type", "send the body as application/json")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise InputError(413, "payload_too_large", f"the body exceeds {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise InputError(413, "payload_too_large", f"the body exceeds {limit} bytes")
    return parse_json(bytes(body))


async def input_error_handler(request: Request, error: Exception) -> Response:
    assert isinstance(error, InputError)
    return error_response(error.status, error.code, error.message)


async def storage_error_handler(request: Request, error: Exception) -> Response:
    logger.error("%s %s: %s", request.method, request.url.path, error)
    return error_response(
        503, "storage_unavailable", "the database is unavailable; retry later", {"Retry-After": "5"}
    )


async def retrieval_error_handler(request: Request, error: Exception) -> Response:
    logger.error("%s %s: %s", request.method, request.url.path, error)
    return error_response(503, "retrieval_unavailable", str(error), {"Retry-After": "5"})


async def reranker_missing_handler(request: Request, error: Exception) -> Response:
    return error_response(501, "not_implemented", str(getattr(error, "message", error)))


async def http_error_handler(request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
    return error_response(error.status_code, code, str(error.detail), dict(error.headers or {}))
