"""``citadel doctor``: check the configuration and every configured backend, and say how to
fix what is wrong. Exit status 0 when everything is usable, 1 otherwise.

It checks, one line each with its latency: the configuration, the data directory, the thread
store (the database and its migrations), the chat model, the embedder, the vector store (when
retrieval is on), Redis (when ``REDIS_URL`` is set) and the reranker (when
``CITADEL_RERANK_URL`` is set). A failed line is followed by its fix, and the next lines are
checked all the same.

Each backend is built by the server's own factories and checked by the check
``GET /health/detailed`` runs (:mod:`agent_server.checks`), one backend after the other (each
latency is that backend's alone), with one attempt (no retries, whatever
``CITADEL_LLM_RETRIES`` says) and within a time limit: :data:`~agent_server.checks.CHECK_TIMEOUT`
for a server, :data:`~agent_server.checks.LOAD_TIMEOUT` for what loads in this process (the
embedded chat model, the embedded embedder, the embedded Postgres).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent_server.backends.errors import BackendError
from agent_server.checks import (
    CHECK_TIMEOUT,
    CHECKS,
    LOAD_TIMEOUT,
    CheckFailed,
    CheckResult,
    fix,
    timed,
)
from agent_server.config import ConfigError, Settings, read_settings
from agent_server.db_cli import one_connection
from agent_server.store.memory import MemoryThreadStore
from agent_server.store.migrations import status
from agent_server.store.postgres_threads import PostgresThreadStore
from agent_server.urls import redact_url


@dataclass(frozen=True, slots=True)
class Item:
    label: str
    backend: str | None  # its name in agent_server.checks (for the fix); None: not a backend
    check: Callable[[Any], Awaitable[str]]  # timed; the detail shown when it passes
    open: Callable[[Settings], Any] = lambda settings: settings  # untimed: imports, builds
    timeout: float = CHECK_TIMEOUT


async def run_doctor() -> int:
    loaded = await timed(_read_settings())
    if not loaded.ok:
        _report("configuration", loaded)
        return 1
    settings: Settings = loaded.value
    # One attempt per check: a retried failure would only be reported later.
    settings = settings.model_copy(update={"llm_retries": 0})
    healthy = True
    for item in items(settings):
        result = await _run(item, settings)
        if not result.ok and result.fix is None and item.backend is not None:
            result.fix = fix(item.backend, settings)
        _report(item.label, result)
        healthy = healthy and result.ok
    return 0 if healthy else 1


async def _run(item: Item, settings: Settings) -> CheckResult:
    """Build the backend (its imports and construction are not its latency), check it, close
    it (nor is its closing)."""
    try:
        backend = item.open(settings)
    except CheckFailed as failed:
        return CheckResult(False, 0.0, code=failed.code, error=str(failed), fix=failed.fix)
    try:
        return await timed(item.check(backend), item.timeout)
    finally:
        if isinstance(backend, _Opened):
            await backend.close()


def items(settings: Settings) -> list[Item]:
    """What ``settings`` configure, in the order it is checked."""
    embedded_postgres = settings.database_url is None and settings.store != "memory"
    found = [
        Item("configuration", None, _configuration),
        Item("data directory", None, _data_dir),
        Item(
            f"thread store ({settings.store})",
            "store",
            _check_store,
            _open_store,
            _limit(embedded_postgres),
        ),
        Item(
            f"chat model ({settings.llm})",
            "model",
            _check_model,
            _open_model,
            _limit(settings.llm == "embedded"),
        ),
        Item(
            f"embedder ({settings.embedder})",
            "embedder",
            _check_embedder,
            _open_embedder,
            _limit(settings.embedder == "embedded"),
        ),
    ]
    if settings.retrieval != "off":
        kind = "Qdrant server" if settings.qdrant_url else "embedded"
        found.append(Item(f"vector store ({kind})", "vectors", _check_vectors, _open_vectors))
    if settings.redis_url is not None:
        found.append(Item("redis", "redis", _check_redis, _open_redis))
    if settings.rerank_url:
        found.append(Item("reranker", "reranker", _check_reranker, _open_reranker))
    return found


def _limit(in_process: bool) -> float:
    """What loads or starts in this process gets longer than a server to answer."""
    return LOAD_TIMEOUT if in_process else CHECK_TIMEOUT


def _report(label: str, result: CheckResult) -> None:
    mark = "ok " if result.ok else "ERR"
    detail = result.value if result.ok else result.error
    print(f"[{mark}] {label} in {result.latency_ms:.1f} ms: {detail}")
    if result.fix:
        print(f"      fix: {result.fix}")
    sys.stdout.flush()


async def _read_settings() -> Settings:
    try:
        return read_settings()
    except ConfigError as error:
        raise CheckFailed(str(error), "correct the variables named above") from None


async def _configuration(settings: Settings) -> str:
    problems = settings.problems()
    if problems:
        raise CheckFailed("; ".join(problems), "set the variables named above (see README)")
    return f"{settings.env} mode, auth {settings.auth}, serving {settings.host}:{settings.port}"


async def _data_dir(settings: Settings) -> str:
    path = settings.data_dir
    fix = "set CITADEL_DATA_DIR to a writable folder"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise CheckFailed(str(error), fix) from None
    if not os.access(path, os.W_OK):
        raise CheckFailed(f"{path} is not writable", fix)
    return str(path.resolve())


# Each backend: open (the server's factory, untimed) and check (timed) -----------------------


@dataclass(frozen=True, slots=True)
class _Opened:
    settings: Settings
    backend: Any
    close: Callable[[], Awaitable[Any]]


def _open_store(settings: Settings) -> _Opened:
    if settings.store == "memory":
        return _Opened(settings, MemoryThreadStore(), _nothing)
    return _Opened(settings, one_connection(settings), _nothing)  # connects in the check


async def _check_store(opened: _Opened) -> str:
    settings = opened.settings
    if isinstance(opened.backend, MemoryThreadStore):
        await CHECKS["store"](opened.backend)
        return "in memory: nothing survives a restart (unset CITADEL_STORE to keep threads)"
    async with opened.backend as pool:
        await CHECKS["store"](PostgresThreadStore(pool, event_retention=settings.event_retention))
        applied = await status(pool)
    pending = sum(item.applied_at is None for item in applied)
    where = (
        redact_url(settings.database_url.get_secret_value())
        if settings.database_url
        else f"embedded, under {settings.data_dir}"
    )
    return f"{where}: {len(applied) - pending} migrations applied, {pending} pending"


def _open_model(settings: Settings) -> _Opened:
    from agent_server.models import create_chat_model

    if settings.llm != "embedded" and not (settings.llm_url and settings.llm_model):
        raise CheckFailed(
            f"not checked: CITADEL_LLM={settings.llm} needs CITADEL_LLM_URL and CITADEL_LLM_MODEL",
            "set CITADEL_LLM_URL and CITADEL_LLM_MODEL (unset CITADEL_LLM for the embedded model)",
        )
    try:
        model = create_chat_model(settings)
    except (ImportError, BackendError) as error:
        raise CheckFailed(f"backend not usable: {error}", fix("model", settings)) from None
    return _Opened(settings, model, model.aclose)


async def _check_model(opened: _Opened) -> str:
    model, settings = opened.backend, opened.settings
    await CHECKS["model"](model)
    where = redact_url(settings.llm_url) if settings.llm_url else "in process"
    return f"{model.provider} model {model.model} answers ({where})"


def _open_embedder(settings: Settings) -> _Opened:
    from agent_server.knowledge.embedders import create_embedder

    if settings.embedder != "embedded" and not (settings.embed_url and settings.embed_model):
        raise CheckFailed(
            f"not checked: CITADEL_EMBEDDER={settings.embedder} needs CITADEL_EMBED_URL and "
            "CITADEL_EMBED_MODEL",
            "set CITADEL_EMBED_URL and CITADEL_EMBED_MODEL (unset CITADEL_EMBEDDER for the "
            "embedded model)",
        )
    try:
        embedder = create_embedder(settings)
    except ImportError as error:
        raise CheckFailed(f"backend not usable: {error}", fix("embedder", settings)) from None
    return _Opened(settings, embedder, embedder.aclose)


async def _check_embedder(opened: _Opened) -> str:
    embedder, settings = opened.backend, opened.settings
    await CHECKS["embedder"](embedder)
    where = redact_url(settings.embed_url) if settings.embed_url else "in process"
    return (
        f"{embedder.provider} model {embedder.model} embeds, {embedder.dimensions} dimensions "
        f"({where})"
    )


def _open_vectors(settings: Settings) -> _Opened:
    from agent_server.knowledge.vectors import open_vector_store

    api_key = settings.qdrant_api_key.get_secret_value() if settings.qdrant_api_key else None
    try:
        vectors = open_vector_store(settings.qdrant_url, api_key, settings.data_dir)
    except ImportError as error:
        raise CheckFailed(f"backend not usable: {error}", fix("vectors", settings)) from None
    return _Opened(settings, vectors, vectors.aclose)


async def _check_vectors(opened: _Opened) -> str:
    settings = opened.settings
    await CHECKS["vectors"](opened.backend)
    if settings.qdrant_url:
        return f"Qdrant server at {redact_url(settings.qdrant_url)} answers"
    return _engine(opened.backend.root)


def _engine(root: Path) -> str:
    collections = sum(entry.is_dir() for entry in root.iterdir())
    return f"embedded Qdrant engine under {root.resolve()}, {collections} collection(s)"


def _open_redis(settings: Settings) -> _Opened:
    from agent_server.services import open_redis

    resources = contextlib.AsyncExitStack()
    return _Opened(settings, open_redis(settings, resources), resources.aclose)


async def _check_redis(opened: _Opened) -> str:
    client, settings = opened.backend, opened.settings
    assert settings.redis_url is not None
    await CHECKS["redis"](client)
    version = (await client.info("server")).get("redis_version", "?")
    return f"Redis {version} at {redact_url(settings.redis_url.get_secret_value())} answers"


def _open_reranker(settings: Settings) -> _Opened:
    from agent_server.services import create_reranker

    reranker = create_reranker(settings)
    assert reranker is not None
    return _Opened(settings, reranker, reranker.aclose)


async def _check_reranker(opened: _Opened) -> str:
    reranker, settings = opened.backend, opened.settings
    await CHECKS["reranker"](reranker)
    model = f", model {settings.rerank_model}" if settings.rerank_model else ""
    return f"{redact_url(reranker.url)} ranks{model}"


async def _nothing() -> None:
    pass
