"""Checks of the backends, shared by ``GET /ready``, ``GET /health/detailed`` and
``citadel doctor``: what checking each backend means, the time it is given, its result (status,
latency, the error) and, when it fails, the fix: a concrete action naming the setting.

The backends are the objects the server's own factories build (:mod:`agent_server.services`);
a check is one cheap call on each, the one the server itself relies on:

==========  ============================================  ====================================
name        backend                                       check
==========  ============================================  ====================================
model       the chat model (``CITADEL_LLM``)              ``ChatModel.check()``
store       the thread store (``DATABASE_URL``)           ``ThreadStore.check()``: ``SELECT 1``
embedder    the embedder (``CITADEL_EMBEDDER``)           ``Embedder.check()``: embeds a word
vectors     the vector store (``QDRANT_URL``)             ``VectorStore.check()``
redis       Redis (``REDIS_URL``), when set               ``PING``
reranker    the rerank endpoint (``CITADEL_RERANK_URL``)  ``Reranker.check()``: ranks a word
==========  ============================================  ====================================
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from agent_server.backends.errors import BackendError
from agent_server.knowledge.errors import RetrievalUnavailable
from agent_server.store.base import StorageUnavailable

if TYPE_CHECKING:
    from agent_server.config import Settings

CHECK_TIMEOUT = 5.0  # seconds for a check of a server
LOAD_TIMEOUT = 60.0  # seconds for an in-process backend's first check: it loads a model

CHECKS: dict[str, Callable[[Any], Awaitable[Any]]] = {
    "model": lambda model: model.check(),
    "store": lambda store: store.check(),
    "embedder": lambda embedder: embedder.check(),
    "vectors": lambda vectors: vectors.check(),
    "redis": lambda client: client.ping(),
    "reranker": lambda reranker: reranker.check(),
}
UNAVAILABLE = (BackendError, StorageUnavailable, RetrievalUnavailable, RedisError)


class CheckFailed(Exception):
    """A check's own finding (not a backend's error), with the fix when it knows a better one
    than :func:`fix`'s."""

    code = "misconfigured"

    def __init__(self, problem: str, fix: str | None = None) -> None:
        super().__init__(problem)
        self.fix = fix


@dataclass(slots=True)
class CheckResult:
    ok: bool
    latency_ms: float
    value: Any = None  # what the check returned
    code: str | None = None
    error: str | None = None
    fix: str | None = None  # set by CheckFailed; callers add :func:`fix`'s otherwise

    def json(self) -> dict[str, Any]:
        """As ``GET /ready`` and ``GET /health/detailed`` show it."""
        if self.ok:
            return {"status": "ok", "latencyMs": self.latency_ms}
        shown = {"status": "error", "code": self.code, "error": self.error}
        return {**shown, **({"fix": self.fix} if self.fix else {}), "latencyMs": self.latency_ms}


async def timed(check: Awaitable[Any], limit: float = CHECK_TIMEOUT) -> CheckResult:
    """Await ``check`` for at most ``limit`` seconds; a backend's error, a
    :class:`CheckFailed` or the timeout is a failed result, never an exception."""
    started = time.perf_counter()
    try:
        async with asyncio.timeout(limit):
            value = await check
        result = CheckResult(True, 0.0, value)
    except CheckFailed as failed:
        result = CheckResult(False, 0.0, code=failed.code, error=str(failed), fix=failed.fix)
    except UNAVAILABLE as error:
        result = CheckResult(False, 0.0, code=_code(error), error=str(error) or repr(error))
    except TimeoutError:
        result = CheckResult(False, 0.0, code="timeout", error=f"no answer within {limit:g} s")
    result.latency_ms = round((time.perf_counter() - started) * 1000, 1)
    return result


async def check(name: str, backend: Any, limit: float = CHECK_TIMEOUT) -> CheckResult:
    """The check of backend ``name`` (a key of :data:`CHECKS`)."""
    return await timed(CHECKS[name](backend), limit)


async def check_all(
    backends: Mapping[str, Any], settings: Settings, limit: float = CHECK_TIMEOUT
) -> dict[str, CheckResult]:
    """Every backend checked at once, each failure with its fix under ``settings``."""
    results = await asyncio.gather(
        *(check(name, backend, limit) for name, backend in backends.items())
    )
    for name, result in zip(backends, results, strict=True):
        if not result.ok and result.fix is None:
            result.fix = fix(name, settings)
    return dict(zip(backends, results, strict=True))


def _code(error: Exception) -> str:
    if isinstance(error, BackendError | RetrievalUnavailable):
        return error.code
    return "storage_unavailable" if isinstance(error, StorageUnavailable) else "redis_unavailable"


def fix(name: str, settings: Settings) -> str:
    """What to do when backend ``name`` fails its check under ``settings``."""
    if name == "model":
        return {
            "embedded": "run `make setup` once (it builds llama-cpp-python and installs the "
            "model), or set CITADEL_LLM_MODEL to a GGUF file",
            "ollama": "start Ollama at CITADEL_LLM_URL and `ollama pull` CITADEL_LLM_MODEL, "
            "or correct CITADEL_LLM_URL",
            "openai": "start the server at CITADEL_LLM_URL, or correct CITADEL_LLM_URL (it ends "
            "in /v1), CITADEL_LLM_MODEL and CITADEL_LLM_API_KEY",
        }[settings.llm]
    if name == "store":
        if settings.database_url is None:
            return (
                "make CITADEL_DATA_DIR writable (the embedded Postgres lives in "
                "CITADEL_DATA_DIR/postgres), or set DATABASE_URL to a Postgres server"
            )
        return (
            "start Postgres at DATABASE_URL, or correct DATABASE_URL "
            "(unset it to use the embedded Postgres under CITADEL_DATA_DIR)"
        )
    if name == "embedder":
        return {
            "embedded": "run `make setup` once (it exports the embedding model to "
            "~/.cache/citadel/models), or set CITADEL_EMBED_MODEL_PATH to an exported model "
            "folder",
            "ollama": "start Ollama at CITADEL_EMBED_URL and `ollama pull` CITADEL_EMBED_MODEL, "
            "or correct CITADEL_EMBED_URL (unset CITADEL_EMBEDDER to use the embedded model)",
            "openai": "start the server at CITADEL_EMBED_URL, or correct CITADEL_EMBED_URL (it "
            "ends in /v1), CITADEL_EMBED_MODEL and CITADEL_EMBED_API_KEY (unset "
            "CITADEL_EMBEDDER to use the embedded model)",
        }[settings.embedder]
    if name == "vectors":
        if settings.qdrant_url:
            return (
                "start the Qdrant server at QDRANT_URL, or correct QDRANT_URL and "
                "QDRANT_API_KEY (unset QDRANT_URL to use the embedded engine under "
                "CITADEL_DATA_DIR)"
            )
        return (
            "make CITADEL_DATA_DIR writable (the embedded engine keeps its collections in "
            "CITADEL_DATA_DIR/qdrant), or set QDRANT_URL to a Qdrant server"
        )
    if name == "redis":
        return (
            "start Redis at REDIS_URL, or correct REDIS_URL (unset it to keep caches, rate "
            "limits and the event bus in this process: one worker only)"
        )
    if name == "reranker":
        return (
            "start the rerank server at CITADEL_RERANK_URL, or correct CITADEL_RERANK_URL (its "
            "base, …/v1), CITADEL_RERANK_MODEL and CITADEL_RERANK_API_KEY (unset "
            "CITADEL_RERANK_URL to search without reranking)"
        )
    raise ValueError(f"no backend named {name!r}")
