"""Errors over HTTP: every refusal is ``{"error": {"code", "message", ...}}`` with a status.

Below the API, code raises :class:`~protocol.errors.Refusal` with a stable code; this table
is the one place that gives each code its HTTP status, and the OpenAPI document lists, per
operation, the codes it may answer with (:func:`refusals`).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any

from fastapi.exceptions import RequestValidationError, WebSocketRequestValidationError
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response
from starlette.websockets import WebSocket

from agent_server.api.validation import describe_request_error
from agent_server.knowledge.errors import RetrievalUnavailable
from agent_server.store.base import StorageUnavailable
from protocol.errors import Refusal

logger = logging.getLogger(__name__)

STATUS: dict[str, int] = {
    # The request itself
    "invalid_json": 400,
    "invalid_form": 400,
    "unsupported_media_type": 415,
    "payload_too_large": 413,
    "length_required": 411,
    "invalid_input": 422,
    "unknown_field": 422,
    "too_many_messages": 422,
    "too_many_tools": 422,
    "too_many_context": 422,
    "unknown_interrupt": 422,
    "invalid_event_id": 422,
    "invalid_cursor": 422,
    "invalid_config": 422,
    "invalid_audio": 422,
    "not_found": 404,
    "method_not_allowed": 405,
    # Who is asking
    "unauthorized": 401,
    "forbidden": 403,
    "rate_limited": 429,
    "too_many_streams": 429,
    "audio_too_fast": 429,
    # What it names
    "thread_not_found": 404,
    "run_not_found": 404,
    "no_active_run": 404,
    "job_not_found": 404,
    "document_not_found": 404,
    "knowledge_base_off": 404,
    "model_not_found": 404,
    "agent_not_found": 404,
    "thread_busy": 409,
    "interrupts_pending": 409,
    "run_exists": 409,
    "tampered_history": 409,
    "ambiguous_run": 409,
    # What it needs
    "not_implemented": 501,
    "unavailable": 503,
    "storage_unavailable": 503,
    "retrieval_unavailable": 503,
    "model_unavailable": 503,
    "voice_unavailable": 503,
    "stt_unavailable": 503,  # a /voice/ws error frame; the socket stays open
    "tts_unavailable": 503,  # likewise
    "model_error": 502,  # the model answered, but not usefully
    "timeout": 504,
    "internal": 500,
}
RETRY_AFTER = {"storage_unavailable": "5", "retrieval_unavailable": "5", "unavailable": "5"}


class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="allow")

    code: str
    message: str


class ErrorBody(BaseModel):
    """Every refusal: a stable ``code`` to branch on, a ``message`` for people."""

    error: ErrorDetail


def status_of(code: str) -> int:
    return STATUS.get(code, 400)


def error_response(
    code: str, message: str, headers: dict[str, str] | None = None, **details: Any
) -> JSONResponse:
    headers = dict(headers or {})
    if code in RETRY_AFTER:
        headers.setdefault("Retry-After", RETRY_AFTER[code])
    body = {"error": {"code": code, "message": message, **details}}
    return JSONResponse(body, status_of(code), headers=headers)


def refusals(*codes: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for an operation that may refuse with ``codes``."""
    by_status: dict[int, list[str]] = defaultdict(list)
    for code in codes:
        by_status[status_of(code)].append(code)
    return {
        status: {"model": ErrorBody, "description": "Refused: " + ", ".join(sorted(names))}
        for status, names in sorted(by_status.items())
    }


def merge_refusals(
    first: dict[int | str, dict[str, Any]], second: dict[int | str, dict[str, Any]]
) -> dict[int | str, dict[str, Any]]:
    """Both sets of OpenAPI responses; refusals with the same status name all their codes."""
    merged = dict(first)
    for status, response in second.items():
        known = merged.get(status)
        if (
            known is not None
            and known.get("model") is ErrorBody
            and response.get("model") is ErrorBody
        ):
            codes = {*_codes(known), *_codes(response)}
            response = {**response, "description": "Refused: " + ", ".join(sorted(codes))}
        merged[status] = response
    return dict(sorted(merged.items(), key=lambda item: str(item[0])))


def _codes(response: dict[str, Any]) -> list[str]:
    return response["description"].removeprefix("Refused: ").split(", ")


# Exception handlers ------------------------------------------------------------------------


async def refusal_handler(connection: HTTPConnection, error: Exception) -> Response | None:
    """A refusal as JSON; on a WebSocket not yet accepted, a close with 4000 + the status."""
    assert isinstance(error, Refusal)
    if isinstance(connection, WebSocket):
        await connection.close(code=4000 + status_of(error.code), reason=error.code)
        return None
    retry_after = error.details.get("retry_after")
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return error_response(error.code, error.message, headers, **error.details)


async def validation_handler(connection: HTTPConnection, error: Exception) -> Response | None:
    if isinstance(error, WebSocketRequestValidationError):
        assert isinstance(connection, WebSocket)
        await connection.close(code=4000 + status_of("invalid_input"), reason="invalid_input")
        return None
    assert isinstance(error, RequestValidationError) and isinstance(connection, Request)
    code, message = describe_request_error(connection, error)
    return error_response(code, message)


async def storage_handler(request: Request, error: Exception) -> Response:
    logger.error("%s %s: %s", request.method, request.url.path, error)
    return error_response("storage_unavailable", "the database is unavailable; retry later")


async def retrieval_handler(request: Request, error: Exception) -> Response:
    logger.error("%s %s: %s", request.method, request.url.path, error)
    return error_response("retrieval_unavailable", str(error))


async def http_handler(request: Request, error: Exception) -> Response:
    """Starlette's and FastAPI's own refusals: unknown routes and methods, unreadable
    bodies (not UTF-8, broken multipart)."""
    assert isinstance(error, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}.get(
        error.status_code
    )
    if code is None and error.status_code == 400:
        form = request.headers.get("content-type", "").startswith("multipart/")
        code = "invalid_form" if form else "invalid_json"
    response = error_response(code or "invalid_input", str(error.detail), dict(error.headers or {}))
    response.status_code = error.status_code
    return response


HANDLERS = {
    Refusal: refusal_handler,
    RequestValidationError: validation_handler,
    WebSocketRequestValidationError: validation_handler,
    StorageUnavailable: storage_handler,
    RetrievalUnavailable: retrieval_handler,
    HTTPException: http_handler,
}
