"""``citadel doctor``: check the configuration and every configured backend, and say how to
fix what is wrong. Exit status 0 when everything is usable, 1 otherwise."""

from __future__ import annotations

import asyncio
import inspect
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from agent_server.backends.errors import BackendError
from agent_server.config import ConfigError, Settings, read_settings

Check = Callable[[], Awaitable[str] | str]  # returns a detail line, raises DoctorProblem


class DoctorProblem(Exception):
    def __init__(self, problem: str, fix: str) -> None:
        super().__init__(problem)
        self.fix = fix


async def run_doctor() -> int:
    try:
        settings = read_settings()
    except ConfigError as error:
        _report(False, "configuration", str(error), "fix the variables named above")
        return 1
    checks: list[tuple[str, Check]] = [
        ("configuration", lambda: _configuration(settings)),
        ("data directory", lambda: _data_dir(settings.data_dir)),
        (f"thread store ({settings.store})", lambda: _database(settings)),
        (f"chat model ({settings.llm})", lambda: _chat_model(settings)),
    ]
    healthy = True
    for name, check in checks:
        try:
            detail = check()
            if inspect.isawaitable(detail):
                detail = await detail
        except DoctorProblem as problem:
            _report(False, name, str(problem), problem.fix)
            healthy = False
        else:
            _report(True, name, detail)
    return 0 if healthy else 1


def _report(ok: bool, name: str, detail: str, fix: str | None = None) -> None:
    mark = "ok " if ok else "ERR"
    print(f"[{mark}] {name}: {detail}")
    if fix:
        print(f"      fix: {fix}")
    sys.stdout.flush()


def _configuration(settings: Settings) -> str:
    problems = settings.problems()
    if problems:
        raise DoctorProblem("; ".join(problems), "set the variables named above (see README)")
    return f"{settings.env} mode, auth {settings.auth}, serving {settings.host}:{settings.port}"


def _data_dir(path: Path) -> str:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DoctorProblem(str(error), "set CITADEL_DATA_DIR to a writable folder") from None
    if not os.access(path, os.W_OK):
        raise DoctorProblem(f"{path} is not writable", "set CITADEL_DATA_DIR to a writable folder")
    return str(path.resolve())


async def _database(settings: Settings) -> str:
    if settings.store == "memory":
        return "in memory: nothing survives a restart (unset CITADEL_STORE to keep threads)"
    from agent_server.db_cli import one_connection
    from agent_server.store.migrations import status
    from agent_server.store.postgres import DatabaseUnavailable
    from agent_server.urls import redact_url

    fix = "start Postgres, or check DATABASE_URL (unset it to use the embedded Postgres)"
    try:
        async with one_connection(settings) as pool:
            migrations = await status(pool)
    except DatabaseUnavailable as error:
        raise DoctorProblem(str(error), fix) from None
    pending = sum(item.applied_at is None for item in migrations)
    where = (
        redact_url(settings.database_url.get_secret_value())
        if settings.database_url
        else f"embedded, under {settings.data_dir}"
    )
    return f"{where}: {len(migrations) - pending} migrations applied, {pending} pending"


async def _chat_model(settings: Settings) -> str:
    from agent_server.models import create_chat_model

    fixes = {
        "embedded": "run `make run` once (it builds llama-cpp-python and installs the model), "
        "or set CITADEL_LLM_MODEL to a GGUF file",
        "ollama": "start Ollama at CITADEL_LLM_URL and `ollama pull` CITADEL_LLM_MODEL",
        "openai": "check CITADEL_LLM_URL (it ends in /v1), CITADEL_LLM_MODEL and the API key",
    }
    try:
        model = create_chat_model(settings)
    except (ImportError, BackendError) as error:
        raise DoctorProblem(f"backend not usable: {error}", fixes[settings.llm]) from None
    try:
        async with asyncio.timeout(60):
            await model.check()
    except BackendError as error:
        raise DoctorProblem(str(error), fixes[settings.llm]) from None
    except TimeoutError:
        raise DoctorProblem("no answer within 60 s", fixes[settings.llm]) from None
    finally:
        await model.aclose()
    where = settings.llm_url or "in-process"
    return f"{model.provider} model {model.model} answers ({where})"
