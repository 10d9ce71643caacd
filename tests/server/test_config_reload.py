"""POST /admin/config/reload and SIGHUP: the configuration file is read again and what can
change live is put in force at once; an invalid file changes nothing; settings that need a
restart are named, not applied; every reload is audited; with Redis every worker reloads.

Servers are real (uvicorn on loopback, the real Postgres, the real Redis for two worker
processes); the chat model is the Ollama backend on OllamaDouble (a TEST DOUBLE: no Ollama
server runs here)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from fastapi import FastAPI

from agent_server.app import create_app
from agent_server.config import read_settings
from agent_server.models.base import ChatModel
from protocol.framing import parse_sse_stream
from tests.conftest import double_model
from tests.doubles.ollama import (
    DEFAULT_MODEL,
    OllamaDouble,
    ScriptedReply,
    text_reply,
    tool_call_reply,
)
from tests.support.agui import new_id, run_input, stream, types
from tests.support.clerk import APP, admin_token, bearer, clerk_settings, session_token
from tests.support.database import isolated_database_url
from tests.support.processes import citadel_process, clean_env, two_workers
from tests.support.redis import RELOAD_DB, empty_redis
from tests.support.servers import serve
from tests.support.waiting import eventually

RELOAD = "/admin/config/reload"
NEW_ORIGIN = "https://new.example"
PREFLIGHT = {
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization",
}


def as_admin() -> dict[str, str]:
    return bearer(admin_token())  # issued now: a session token lives a minute


def write_config(path: Path, **settings: Any) -> Path:
    path.write_text(yaml.safe_dump(settings))
    return path


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The file CITADEL_CONFIG names for the in-process servers of these tests."""
    path = write_config(tmp_path / "citadel.yaml")
    monkeypatch.setenv("CITADEL_CONFIG", str(path))
    return path


@contextlib.asynccontextmanager
async def reloadable(
    model: ChatModel | None = None, **settings: Any
) -> AsyncIterator[tuple[str, FastAPI]]:
    """A server whose reloads read $CITADEL_CONFIG and the environment under ``settings``
    (which win over both, so the file can only change what they leave out); yields its URL
    and app."""
    async with contextlib.AsyncExitStack() as stack:
        load = functools.partial(
            read_settings,
            database_url=await stack.enter_async_context(isolated_database_url()),
            data_dir=stack.enter_context(tempfile.TemporaryDirectory()),
            demo_docs=None,
            **settings,
        )
        app = create_app(load(), model=model, load=load)
        yield await stack.enter_async_context(serve(app)), app


@contextlib.asynccontextmanager
async def signed_in_server(ollama: OllamaDouble) -> AsyncIterator[httpx.AsyncClient]:
    """A production server verifying Clerk test tokens; yields a client on it."""
    async with (
        reloadable(double_model(ollama), **clerk_settings()) as (url, _),
        httpx.AsyncClient(base_url=url) as client,
    ):
        yield client


async def statuses(client: httpx.AsyncClient, user: str, count: int) -> list[int]:
    headers = bearer(session_token(user))
    return [(await client.get("/threads", headers=headers)).status_code for _ in range(count)]


async def preflight(client: httpx.AsyncClient, origin: str) -> str | None:
    """The origin the server allows a browser at ``origin`` (None: not allowed)."""
    answer = await client.options("/agui", headers={"Origin": origin, **PREFLIGHT})
    return answer.headers.get("access-control-allow-origin")


# Live changes ---------------------------------------------------------------------------------


async def test_a_lowered_rate_limit_holds_from_the_next_request(ollama, config):
    write_config(config, CITADEL_RATE_REQUESTS="100/min")
    async with signed_in_server(ollama) as client:
        assert await statuses(client, "alice", 3) == [200, 200, 200]
        write_config(config, CITADEL_RATE_REQUESTS="2/h")
        reloaded = await client.post(RELOAD, headers=as_admin())
        assert reloaded.status_code == 200, reloaded.text
        assert reloaded.json()["applied"] == ["CITADEL_RATE_REQUESTS"]
        # Alice's bucket now holds at most 2: two more requests, then 429.
        assert await statuses(client, "alice", 3) == [200, 200, 429]


async def test_a_new_cors_origin_is_answered_after_the_reload(ollama, config):
    write_config(config, cors_origins=[APP])
    async with signed_in_server(ollama) as client:
        assert await preflight(client, NEW_ORIGIN) is None
        write_config(config, cors_origins=[APP, NEW_ORIGIN])
        assert (await client.post(RELOAD, headers=as_admin())).json()["applied"] == [
            "CITADEL_CORS_ORIGINS"
        ]
        assert await preflight(client, NEW_ORIGIN) == NEW_ORIGIN
        assert await preflight(client, APP) == APP


async def test_an_approval_tool_added_interrupts_the_next_run(ollama, config):
    calculate = tool_call_reply([("calculate", {"expression": "6 * 7"})])
    ollama.enqueue(ScriptedReply(calculate), ScriptedReply(text_reply("It is 42.")))
    async with (
        reloadable(double_model(ollama)) as (url, _),
        httpx.AsyncClient(base_url=url) as client,
    ):
        _, before = await stream(client, "/agui", run_input(new_id("thread"), new_id("run")))
        assert "TOOL_CALL_RESULT" in types(before)
        assert before[-1]["outcome"] == {"type": "success"}

        write_config(config, CITADEL_APPROVAL_TOOLS="calculate")
        assert (await client.post(RELOAD)).json()["applied"] == ["CITADEL_APPROVAL_TOOLS"]
        ollama.enqueue(ScriptedReply(calculate))
        _, after = await stream(client, "/agui", run_input(new_id("thread"), new_id("run")))
    assert "TOOL_CALL_RESULT" not in types(after)
    assert after[-1]["outcome"]["type"] == "interrupt"
    assert after[-1]["outcome"]["interrupts"][0]["toolCallId"]


async def test_an_agent_added_to_the_file_is_listed_and_runs_after_the_reload(ollama, config):
    ollama.enqueue(ScriptedReply(text_reply("Tick.")))
    async with (
        reloadable(double_model(ollama)) as (url, _),
        httpx.AsyncClient(base_url=url) as client,
    ):
        assert list((await client.get("/api/copilotkit/info")).json()["agents"]) == ["default"]
        clock = {"description": "Tells the time", "tools": ["get_current_time"]}
        write_config(config, agents={"clock": clock})
        assert (await client.post(RELOAD)).json()["applied"] == ["CITADEL_AGENTS"]
        info = (await client.get("/api/copilotkit/info")).json()
        status, _ = await stream(client, "/agui/agents/clock", run_input(new_id("t"), new_id("r")))
    assert list(info["agents"]) == ["default", "clock"]
    assert status == 200
    assert [t["function"]["name"] for t in ollama.requests[0]["tools"]] == ["get_current_time"]


async def test_the_log_level_changes_on_reload(ollama, config):
    loggers = [logging.getLogger(), logging.getLogger("uvicorn.error")]
    levels = [logger.level for logger in loggers]
    try:
        async with reloadable(double_model(ollama)) as (url, _), httpx.AsyncClient() as client:
            write_config(config, log_level="debug")
            answer = (await client.post(f"{url}{RELOAD}")).json()
            assert [logger.level for logger in loggers] == [logging.DEBUG, logging.DEBUG]
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
    assert answer["applied"] == ["CITADEL_LOG_LEVEL"]


async def test_a_run_in_progress_keeps_the_model_it_started_with(config):
    async with OllamaDouble() as first, OllamaDouble() as second:
        model = {"llm": "ollama", "llm_model": DEFAULT_MODEL, "retrieval": "off"}
        write_config(config, **model, llm_url=first.url)
        first.enqueue(ScriptedReply(text_reply("old model")[:1], hang=True))
        second.enqueue(ScriptedReply(text_reply("new model")))
        thread = new_id("thread")
        async with (
            reloadable() as (url, app),
            httpx.AsyncClient(base_url=url, timeout=30) as client,
            client.stream("POST", "/agui", json=run_input(thread, new_id("run"))) as response,
        ):
            old_model = app.state.services.model
            events = parse_sse_stream(response.aiter_bytes())
            started = []
            async for event in events:  # until the old model has begun to answer
                started.append(event)
                if event["type"] == "TEXT_MESSAGE_CONTENT":
                    break
            write_config(config, **model, llm_url=second.url)
            reloaded = (await client.post(RELOAD)).json()
            _, next_run = await stream(client, "/agui", run_input(new_id("thread"), new_id("run")))
            assert not closed(old_model)  # the first run still streams from it
            assert (await client.post("/agui/stop", json={"threadId": thread})).status_code == 200
            rest = [event async for event in events]

            async def old_model_closed() -> bool:
                return closed(old_model)

            await eventually(old_model_closed)
    assert reloaded["applied"] == ["CITADEL_LLM_URL"]
    first_run = started + rest
    assert "RUN_ERROR" not in types(first_run)
    assert "old model".startswith(text_of(first_run))
    assert first_run[-1]["outcome"] == {"type": "cancelled"}
    assert text_of(next_run) == "new model"
    assert (len(first.requests), len(second.requests)) == (1, 1)


def closed(model: ChatModel) -> bool:
    """Whether the HTTP client an Ollama backend owns is closed."""
    return model._http._http.is_closed  # type: ignore[attr-defined]


def text_of(events: list[dict[str, Any]]) -> str:
    return "".join(e["delta"] for e in events if e["type"] == "TEXT_MESSAGE_CONTENT")


# Nothing to apply, nothing applied --------------------------------------------------------------


async def test_reloading_an_unchanged_file_says_nothing_changed(ollama, config):
    write_config(config, CITADEL_RATE_RUNS="20/min")
    async with reloadable(double_model(ollama)) as (url, _), httpx.AsyncClient() as client:
        answer = (await client.post(f"{url}{RELOAD}")).json()
    assert answer["status"] == "unchanged" and answer["message"] == "nothing changed"
    assert answer["applied"] == [] and answer["restartRequired"] == []
    assert [worker["status"] for worker in answer["workers"]] == ["unchanged"]
    assert answer["unanswered"] == 0


@pytest.mark.parametrize(
    ("file", "problems"),
    [
        (
            {"CITADEL_RATE_RUN": "1/min", "port": "lots", "CITADEL_LOG_LEVEL": "loud"},
            [
                "CITADEL_PORT: Input should be a valid integer, unable to parse string as an "
                "integer",
                "CITADEL_LOG_LEVEL: Input should be 'debug', 'info', 'warning', 'error' or "
                "'critical'",
                "CITADEL_RATE_RUN: unknown setting (did you mean CITADEL_RATE_RUNS?)",
            ],
        ),
        (
            {"cors_origins": ["*"], "rate_requests": "lots", "approval_tools": "rm_rf"},
            [
                "CITADEL_RATE_REQUESTS: 'lots' is not a rate such as 30/min, 5/s or 100/h",
                "production refuses CITADEL_CORS_ORIGINS=*; list exact origins",
                "CITADEL_APPROVAL_TOOLS: approval configured for unknown tools: rm_rf",
            ],
        ),
    ],
    ids=["unreadable values", "unusable settings"],
)
async def test_an_invalid_file_changes_nothing_and_lists_every_problem(
    ollama, config, file, problems
):
    write_config(config, cors_origins=[APP])
    async with signed_in_server(ollama) as client:
        # An origin added beside the problems (or "*"): not in force either.
        write_config(config, **{"cors_origins": [APP, NEW_ORIGIN], **file})
        refused = await client.post(RELOAD, headers=as_admin())
        assert await preflight(client, NEW_ORIGIN) is None
    assert refused.status_code == 422
    error = refused.json()["error"]
    assert error["code"] == "invalid_config" and error["problems"] == problems
    assert error["message"] == f"the configuration has {len(problems)} problem(s); nothing changed"


async def test_restart_only_settings_are_named_and_not_applied(ollama, config):
    write_config(config, CITADEL_RETRIEVAL="auto")
    async with reloadable(double_model(ollama)) as (url, app), httpx.AsyncClient() as client:
        services = app.state.services
        running = services.settings
        write_config(
            config,
            CITADEL_RETRIEVAL="off",  # to or from off: the knowledge base opens at start only
            CITADEL_PORT=9999,
            CITADEL_DISCONNECT_GRACE=1,
            knowledge_base="elsewhere",
            CITADEL_SYSTEM_PROMPT="Answer in French.",  # live, beside them
        )
        first = (await client.post(f"{url}{RELOAD}")).json()
        again = (await client.post(f"{url}{RELOAD}")).json()
        in_force = services.settings
    restart = [
        "CITADEL_PORT",
        "CITADEL_KNOWLEDGE_BASE",
        "CITADEL_RETRIEVAL",
        "CITADEL_DISCONNECT_GRACE",
    ]
    assert first["applied"] == ["CITADEL_SYSTEM_PROMPT"]
    assert first["restartRequired"] == restart
    assert first["message"] == (
        f"applied CITADEL_SYSTEM_PROMPT; a restart is needed for {', '.join(restart)}"
    )
    # Still different from what runs, so still named; the prompt is in force already.
    assert again["applied"] == [] and again["restartRequired"] == restart
    assert (in_force.port, in_force.retrieval, in_force.knowledge_base) == (
        running.port,
        "auto",
        running.knowledge_base,
    )
    assert in_force.disconnect_grace == running.disconnect_grace
    assert services.agent.settings.system_prompt.startswith("Answer in French.")


# Who may, and the record ---------------------------------------------------------------------


async def test_only_administrators_may_reload(ollama, config):
    write_config(config, cors_origins=[APP])
    async with signed_in_server(ollama) as client:
        write_config(config, cors_origins=[APP, NEW_ORIGIN])
        refused = await client.post(RELOAD, headers=bearer(session_token("mallory")))
        assert await preflight(client, NEW_ORIGIN) is None
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"


async def test_every_reload_is_audited_with_what_it_did(ollama, config):
    write_config(config, cors_origins=[APP])
    async with signed_in_server(ollama) as client:
        write_config(config, cors_origins=[APP, NEW_ORIGIN], CITADEL_PORT=9999)
        await client.post(RELOAD, headers=as_admin())
        write_config(config, CITADEL_RATE_RUNS="often")
        await client.post(RELOAD, headers=as_admin())
        audit = await client.get("/admin/audit", params={"actor": "user_root"}, headers=as_admin())
    invalid, applied = [e for e in audit.json()["entries"] if e["action"] == "config.reload"]
    assert applied["details"]["via"] == "http"
    assert applied["details"]["status"] == "applied"
    assert applied["details"]["applied"] == ["CITADEL_CORS_ORIGINS"]
    assert applied["details"]["restartRequired"] == ["CITADEL_PORT"]
    assert invalid["details"]["status"] == "invalid"
    assert invalid["details"]["problems"] == [
        "CITADEL_RATE_RUNS: 'often' is not a rate such as 30/min, 5/s or 100/h"
    ]
    assert applied["remoteAddr"] == "127.0.0.1"


# Processes: SIGHUP, and two workers on Redis ---------------------------------------------------


@pytest.mark.timeout(120)
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
async def test_sighup_reloads_a_citadel_serve_process_which_still_stops_on(stop, tmp_path):
    config = write_config(tmp_path / "citadel.yaml", cors_origins=[APP])
    env = clean_env(
        CITADEL_CONFIG=str(config),
        CITADEL_STORE="memory",
        CITADEL_RETRIEVAL="off",
        CITADEL_LLM="ollama",
        CITADEL_LLM_URL="http://127.0.0.1:9",  # never called
        CITADEL_LLM_MODEL=DEFAULT_MODEL,
        CITADEL_DATA_DIR=str(tmp_path / "data"),
    )
    async with citadel_process(env) as (process, url), httpx.AsyncClient(base_url=url) as client:
        assert await preflight(client, NEW_ORIGIN) is None
        write_config(config, cors_origins=[APP, NEW_ORIGIN])
        process.send_signal(signal.SIGHUP)

        async def reloaded() -> bool:
            return await preflight(client, NEW_ORIGIN) == NEW_ORIGIN

        await eventually(reloaded)
        entries = (await client.get("/admin/audit")).json()["entries"]
        [entry] = [e for e in entries if e["action"] == "config.reload"]
        assert entry["actor"] == "citadel" and entry["details"]["via"] == "SIGHUP"
        assert entry["details"]["applied"] == ["CITADEL_CORS_ORIGINS"]
        process.send_signal(stop)
        async with asyncio.timeout(30):
            await process.wait()
    assert process.returncode in (0, -stop)  # uvicorn re-raises the signal once it has stopped


@pytest.mark.timeout(120)
async def test_a_reload_asked_of_one_worker_applies_on_every_worker(tmp_path):
    config = write_config(tmp_path / "citadel.yaml", cors_origins=[APP])
    async with (
        OllamaDouble() as ollama,
        isolated_database_url() as database,
        empty_redis(RELOAD_DB) as redis_url,
        two_workers(
            tmp_path,
            ollama.url,
            database,
            redis_url,
            CITADEL_CONFIG=str(config),
            # Pub/sub ignores the database number: a channel of this test's own.
            CITADEL_RELOAD_CHANNEL=f"citadel:test-reload:{tmp_path.name}",
        ) as (a, b),
        httpx.AsyncClient() as client,
    ):
        on_b = httpx.AsyncClient(base_url=b)
        assert await preflight(on_b, NEW_ORIGIN) is None
        write_config(config, cors_origins=[APP, NEW_ORIGIN])
        answer = (await client.post(f"{a}{RELOAD}")).json()
        allowed_on_b = await preflight(on_b, NEW_ORIGIN)
        await on_b.aclose()
    assert allowed_on_b == NEW_ORIGIN
    assert answer["unanswered"] == 0 and "peerError" not in answer
    assert len({worker["worker"] for worker in answer["workers"]}) == 2
    assert [(w["status"], w["applied"]) for w in answer["workers"]] == [
        ("applied", ["CITADEL_CORS_ORIGINS"]),
        ("applied", ["CITADEL_CORS_ORIGINS"]),
    ]
