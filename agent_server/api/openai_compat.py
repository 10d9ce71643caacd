"""OpenAI-compatible faces: ``POST /v1/embeddings`` over the configured embedder, and
``POST /v1/rerank`` proxied to the configured rerank endpoint.

Requests and answers follow OpenAI's shapes, so the official SDKs and any OpenAI-compatible
client work unchanged (the Python SDK asks for base64 by default). Errors keep our envelope,
``{"error": {"code", "message"}}``, with OpenAI's ``type`` added.
"""

from __future__ import annotations

import base64
from typing import Any, Literal

import numpy as np
from pydantic import Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from agent_server.api.http import parse_body, read_json, services_of
from agent_server.knowledge.embedders.base import Embedder
from agent_server.knowledge.embedders.registry import model_key
from agent_server.knowledge.library import RerankerMissing
from protocol.input import InputError, StrictModel

MAX_INPUTS = 2048


class EmbeddingsRequest(StrictModel):
    """OpenAI's body; token-id inputs are refused (our tokenizers are the servers' own)."""

    input: str | list[str] = Field(min_length=1)
    model: str
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    user: str | None = None


async def embeddings(request: Request) -> Response:
    services = services_of(request)
    data = await read_json(request, services.settings.max_body_bytes)
    body = _parse(data)
    texts = [body.input] if isinstance(body.input, str) else body.input
    if len(texts) > MAX_INPUTS:
        raise InputError(422, "invalid_input", f"input: at most {MAX_INPUTS} texts per request")
    embedder = _route(services.embedder, body.model)
    if body.dimensions is not None and body.dimensions != embedder.dimensions:
        raise InputError(
            422,
            "invalid_input",
            f"dimensions: {body.model} embeds in {embedder.dimensions} dimensions only",
        )
    vectors = await embedder.embed(texts)
    tokens = sum(len(text.split()) for text in texts)  # words: the embedders count no tokens
    return JSONResponse(
        {
            "object": "list",
            "data": [
                {"object": "embedding", "index": index, "embedding": _encoded(row, body)}
                for index, row in enumerate(vectors)
            ],
            "model": embedder.model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    )


def _parse(data: Any) -> EmbeddingsRequest:
    texts = data.get("input") if isinstance(data, dict) else None
    if isinstance(texts, list) and any(not isinstance(item, str) for item in texts):
        raise InputError(422, "invalid_input", "input: send text; token ids are not accepted")
    return parse_body(EmbeddingsRequest, data)


def _route(embedder: Embedder, model: str) -> Embedder:
    """The embedder serving ``model``: asked by its name, with or without a tag or owner."""
    if model_key(model) != model_key(embedder.model):
        raise InputError(
            404,
            "model_not_found",
            f"no embedding model {model!r}; this server has {embedder.model!r}",
        )
    return embedder


def _encoded(row: np.ndarray, body: EmbeddingsRequest) -> list[float] | str:
    if body.encoding_format == "base64":
        return base64.b64encode(row.astype("<f4").tobytes()).decode()
    return row.tolist()


async def rerank(request: Request) -> Response:
    """Proxy to the configured rerank endpoint; 501 when there is none."""
    services = services_of(request)
    if services.reranker is None:
        raise InputError(501, "not_implemented", RerankerMissing.message)
    data = await read_json(request, services.settings.max_body_bytes)
    if not (
        isinstance(data, dict)
        and isinstance(data.get("query"), str)
        and isinstance(data.get("documents"), list)
    ):
        raise InputError(422, "invalid_input", "send {query: string, documents: [...], top_n?}")
    return JSONResponse(await services.reranker.forward(data))


routes = [
    Route("/v1/embeddings", embeddings, methods=["POST"]),
    Route("/v1/rerank", rerank, methods=["POST"]),
]
