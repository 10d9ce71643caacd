"""Embedders behind HTTP: Ollama's ``POST /api/embed`` and OpenAI's ``POST /v1/embeddings``.

Both take a list of inputs per request; texts are sent in batches of ``batch_size``. The two
APIs differ only in path, body and answer shape, which a :class:`Dialect` describes. The
shared resilient client gives retries, the circuit breaker and timeouts; its errors become
:class:`RetrievalUnavailable`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from agent_server.backends.errors import BackendError
from agent_server.backends.resilience import ResilientHTTP
from agent_server.knowledge.embedders.base import Vectors, normalised
from agent_server.knowledge.embedders.registry import known_dimensions
from agent_server.knowledge.errors import RetrievalUnavailable


@dataclass(frozen=True, slots=True)
class Dialect:
    provider: str
    path: str
    body: Callable[[str, list[str]], dict[str, Any]]
    vectors: Callable[[Any], list[list[float]]]


def _ollama_vectors(answer: Any) -> list[list[float]]:
    return answer["embeddings"]


def _openai_vectors(answer: Any) -> list[list[float]]:
    return [item["embedding"] for item in sorted(answer["data"], key=lambda item: item["index"])]


OLLAMA = Dialect(
    "ollama",
    "/api/embed",
    lambda model, texts: {"model": model, "input": texts, "truncate": True},
    _ollama_vectors,
)
OPENAI = Dialect(
    "openai",
    "/embeddings",
    lambda model, texts: {"model": model, "input": texts, "encoding_format": "float"},
    _openai_vectors,
)


class HTTPEmbedder:
    """Embeds through the server at ``base_url``: Ollama's root, or an OpenAI-compatible
    ``/v1`` base, as ``dialect`` says."""

    def __init__(
        self, dialect: Dialect, base_url: str, model: str, http: ResilientHTTP, batch_size: int = 64
    ) -> None:
        self.provider = dialect.provider
        self.model = model
        self._dialect = dialect
        self._url = base_url.rstrip("/") + dialect.path
        self._http = http
        self._batch_size = batch_size
        self._dimensions = known_dimensions(model)

    @property
    def dimensions(self) -> int:
        if self._dimensions is None:
            raise RuntimeError(f"dimensions of {self.model!r} are unknown until check()")
        return self._dimensions

    async def embed(self, texts: Sequence[str]) -> Vectors:
        batches = [
            await self._embed_batch(list(texts[start : start + self._batch_size]))
            for start in range(0, len(texts), self._batch_size)
        ]
        if not batches:
            return np.zeros((0, self._dimensions or 0), dtype=np.float32)
        return np.concatenate(batches)

    async def check(self) -> None:
        """One tiny request; it also learns the dimensions of a model not in the registry."""
        await self._embed_batch(["ok"])

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _embed_batch(self, texts: list[str]) -> Vectors:
        try:
            answer = await self._http.post_json(self._url, self._dialect.body(self.model, texts))
            rows = self._dialect.vectors(answer)
        except BackendError as error:
            raise RetrievalUnavailable(f"embedder {error}") from None
        except (KeyError, TypeError, ValueError) as error:
            raise RetrievalUnavailable(
                f"embedder {self._http.name}: unexpected answer ({error!r})"
            ) from None
        vectors = normalised(rows) if rows else np.zeros((0, 0), dtype=np.float32)
        if vectors.shape[0] != len(texts):
            raise RetrievalUnavailable(
                f"embedder {self._http.name}: {vectors.shape[0]} vectors for {len(texts)} texts"
            )
        if self._dimensions is None:
            self._dimensions = vectors.shape[1]
        elif vectors.shape[1] != self._dimensions:
            raise RetrievalUnavailable(
                f"embedder {self._http.name}: {self.model} returned {vectors.shape[1]}"
                f" dimensions, expected {self._dimensions}"
            )
        return vectors
