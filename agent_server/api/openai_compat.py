"""OpenAI-compatible faces: ``POST /v1/embeddings`` over the configured embedder, and
``POST /v1/rerank`` proxied to the configured rerank endpoint.

Requests and answers follow OpenAI's shapes, so the official SDKs and any OpenAI-compatible
client work unchanged (the Python SDK asks for base64 by default). Errors keep our envelope,
``{"error": {"code", "message"}}``.
"""

from __future__ import annotations

import base64
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field, field_validator

from agent_server.api.deps import ServicesDep
from agent_server.api.errors import refusals
from agent_server.api.guard import CALLER
from agent_server.auth.principals import Principal
from agent_server.knowledge.embedders.base import Embedder
from agent_server.knowledge.embedders.registry import model_key
from agent_server.knowledge.library import RerankerMissing
from protocol.errors import Refusal

router = APIRouter(tags=["OpenAI-compatible"])
Caller = Annotated[Principal, Depends(CALLER)]

MAX_INPUTS = 2048
MAX_TEXT = 200_000  # characters of one text to embed or rerank


class OpenAIModel(BaseModel):
    """OpenAI's bodies: snake_case, strict, unknown fields refused as OpenAI refuses them."""

    model_config = ConfigDict(strict=True, frozen=True, extra="forbid")


class EmbeddingsRequest(OpenAIModel):
    """OpenAI's body; token-id inputs are refused (our tokenizers are the servers' own)."""

    input: str | list[Annotated[str, Field(max_length=MAX_TEXT)]] = Field(max_length=MAX_TEXT)
    model: str = Field(max_length=200)
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1, le=65536)
    user: str | None = Field(None, max_length=200)

    @field_validator("input", mode="before")
    @classmethod
    def _text_only(cls, value: Any) -> Any:
        if isinstance(value, list):
            if any(not isinstance(item, str) for item in value):
                raise ValueError("send text; token ids are not accepted")
            if not value:
                raise ValueError("send at least one text")
            if len(value) > MAX_INPUTS:
                raise ValueError(f"at most {MAX_INPUTS} texts per request")
        return value


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class Embeddings(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage


class RerankRequest(OpenAIModel):
    """The Cohere/Jina/TEI body, forwarded as it is."""

    query: str = Field(max_length=MAX_TEXT)
    documents: list[str | dict[str, Any]] = Field(max_length=MAX_INPUTS)
    model: str | None = Field(None, max_length=200)
    top_n: int | None = Field(None, ge=1, le=MAX_INPUTS)
    return_documents: bool | None = None


@router.post(
    "/v1/embeddings",
    responses=refusals("invalid_input", "model_not_found", "retrieval_unavailable"),
)
async def embeddings(body: EmbeddingsRequest, services: ServicesDep, caller: Caller) -> Embeddings:
    """Embeddings from the configured embedder, as OpenAI's API answers them."""
    texts = [body.input] if isinstance(body.input, str) else body.input
    embedder = _route(services.embedder, body.model)
    if body.dimensions is not None and body.dimensions != embedder.dimensions:
        raise Refusal(
            "invalid_input",
            f"dimensions: {body.model} embeds in {embedder.dimensions} dimensions only",
        )
    vectors = await embedder.embed(texts)
    tokens = sum(len(text.split()) for text in texts)  # words: the embedders count no tokens
    return Embeddings(
        data=[
            Embedding(index=index, embedding=_encoded(row, body.encoding_format))
            for index, row in enumerate(vectors)
        ],
        model=embedder.model,
        usage=EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens),
    )


def _route(embedder: Embedder, model: str) -> Embedder:
    """The embedder serving ``model``: asked by its name, with or without a tag or owner."""
    if model_key(model) != model_key(embedder.model):
        raise Refusal(
            "model_not_found", f"no embedding model {model!r}; this server has {embedder.model!r}"
        )
    return embedder


def _encoded(row: np.ndarray, encoding: str) -> list[float] | str:
    if encoding == "base64":
        return base64.b64encode(row.astype("<f4").tobytes()).decode()
    return row.tolist()


@router.post(
    "/v1/rerank",
    responses=refusals("invalid_input", "not_implemented", "retrieval_unavailable"),
)
async def rerank(body: RerankRequest, services: ServicesDep, caller: Caller) -> dict[str, Any]:
    """Forwarded to the configured rerank endpoint (`CITADEL_RERANK_URL`); 501 without one."""
    if services.reranker is None:
        raise Refusal("not_implemented", RerankerMissing.message)
    return await services.reranker.forward(body.model_dump(exclude_none=True))
