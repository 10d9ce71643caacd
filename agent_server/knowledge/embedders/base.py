"""The one interface every embedder implements.

An embedder turns texts into unit-length float32 vectors (cosine similarity = dot product),
one row per text, in order. Failures are raised as :class:`RetrievalUnavailable`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

Vectors = npt.NDArray[np.float32]  # shape (len(texts), dimensions), rows L2-normalised


@runtime_checkable
class Embedder(Protocol):
    provider: str  # "embedded", "ollama", "openai"
    model: str
    dimensions: int

    async def embed(self, texts: Sequence[str]) -> Vectors:
        """Embed ``texts`` (any number; the embedder batches as its backend prefers)."""
        ...

    async def check(self) -> None:
        """Raise :class:`RetrievalUnavailable` if the embedder cannot serve right now."""
        ...

    async def aclose(self) -> None: ...


def normalised(vectors: npt.ArrayLike) -> Vectors:
    """Rows scaled to unit length (zero rows stay zero), as float32."""
    array = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    return array / np.where(norms == 0, 1, norms)
