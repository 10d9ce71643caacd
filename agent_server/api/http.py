"""HTTP plumbing shared by the routes: bounded body reading and JSON errors."""

from __future__ import annotations

import logging
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from protocol.input import InputError, parse_json

logger = logging.getLogger(__name__)


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
