"""Logs and request ids: JSON lines that name the request and the run, ``X-Request-ID`` on
every answer, and both ids sent on to the model and embedding servers. The chat model and the
embedder are the Ollama backends on OllamaDouble (a TEST DOUBLE: no Ollama server runs here)."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import re
from datetime import UTC, datetime

import httpx
import orjson
import time_machine
from websockets.asyncio.client import connect as ws_connect

from agent_server.backends.resilience import RetryPolicy, Timeouts
from agent_server.config import Settings
from agent_server.models.ollama import OllamaChatModel
from agent_server.observability.logs import (
    JsonFormatter,
    TextFormatter,
    bind_request,
    bind_run,
    configure_logging,
)
from tests.conftest import citadel, double_model
from tests.doubles.ollama import DEFAULT_MODEL, ScriptedReply, text_reply
from tests.server.test_access import run_body
from tests.server.test_cli import CITADEL
from tests.support.agui import stream, types

GENERATED = re.compile(r"[0-9a-f]{32}")


class Lines(logging.Handler):
    """Formats each record as it is emitted, in the emitting task's context."""

    def __init__(self, formatter: logging.Formatter) -> None:
        super().__init__()
        self.setFormatter(formatter)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def log_some(logger: logging.Logger) -> None:
    bind_request("req-1")
    bind_run("thread-1", "run-1")
    logger.warning(
        "tool %s took %.1f s",
        "calculate",
        0.5,
        extra={"tool": "calculate", "seconds": 0.5, "tags": ["a"], "odd": object()},
    )
    try:
        raise ZeroDivisionError("division by zero")
    except ZeroDivisionError:
        logger.exception("it broke")


def logged_lines(name: str, formatter: logging.Formatter) -> list[str]:
    """The lines of :func:`log_some` inside a request, then of one warning outside any."""
    logger = logging.getLogger(name)
    handler = Lines(formatter)
    logger.addHandler(handler)
    try:
        contextvars.copy_context().run(log_some, logger)
        logger.warning("outside any request")
    finally:
        logger.removeHandler(handler)
    return handler.lines


def test_json_lines_carry_the_ids_the_extra_fields_and_the_exception():
    with time_machine.travel(datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC), tick=False):
        lines = logged_lines("tests.logs.json", JsonFormatter())
    first, second, outside = (orjson.loads(line) for line in lines)
    assert all("\n" not in line for line in lines)
    assert first["time"] == "2026-03-01T12:00:00.123Z"  # when it was logged, UTC, to the ms
    assert {key: first[key] for key in ("level", "logger", "message")} == {
        "level": "WARNING",
        "logger": "tests.logs.json",
        "message": "tool calculate took 0.5 s",
    }
    assert (first["requestId"], first["threadId"], first["runId"]) == ("req-1", "thread-1", "run-1")
    assert (first["tool"], first["seconds"], first["tags"]) == ("calculate", 0.5, ["a"])
    assert first["odd"].startswith("<object object at")
    assert "exception" not in first and "exc_info" not in first and "args" not in first
    assert second["message"] == "it broke" and second["runId"] == "run-1"
    assert (
        second["exception"].startswith("Traceback") and "ZeroDivisionError" in second["exception"]
    )
    assert outside["message"] == "outside any request"
    assert not {"requestId", "threadId", "runId"} & outside.keys()


def test_text_lines_carry_the_ids_too():
    lines = logged_lines("tests.logs.text", TextFormatter())
    assert lines[0].endswith(
        " WARNING tests.logs.text [req=req-1 thread=thread-1 run=run-1]: tool calculate took 0.5 s"
    )
    assert "ZeroDivisionError" in lines[1]
    assert lines[2].endswith(" WARNING tests.logs.text: outside any request")


async def test_answers_echo_a_sane_request_id_and_carry_a_fresh_one_otherwise(ollama):
    origin = "https://app.example"
    async with (
        citadel(double_model(ollama), store="memory", cors_origins=[origin]) as url,
        httpx.AsyncClient(base_url=url) as client,
    ):

        async def answer_id(given: str | None = None, path: str = "/health") -> str:
            headers = {"X-Request-ID": given} if given is not None else {}
            return (await client.get(path, headers=headers)).headers["X-Request-ID"]

        sane = "Edge-7f3a.b_c:42"
        echoed = await answer_id(sane)
        long_enough = await answer_id("x" * 128)
        fresh = [await answer_id(), await answer_id(), await answer_id(path="/nowhere")]
        refused = [await answer_id(bad) for bad in ("x" * 129, "a b", "a/b", "", "<script>")]
        browser = await client.get("/health", headers={"Origin": origin})
        preflight = await client.options(
            "/agui",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "x-request-id",
            },
        )
        socket_url = url.replace("http", "ws") + "/agui/ws"
        async with ws_connect(socket_url, additional_headers={"X-Request-ID": "ws-1"}) as socket:
            socket_id = socket.response.headers["X-Request-ID"]
    assert echoed == sane and long_enough == "x" * 128
    assert all(GENERATED.fullmatch(value) for value in fresh + refused)
    assert len(set(fresh + refused)) == len(fresh + refused)
    assert "x-request-id" in browser.headers["access-control-expose-headers"].lower()
    assert preflight.status_code == 200
    assert "x-request-id" in preflight.headers["access-control-allow-headers"].lower()
    assert socket_id == "ws-1"


async def test_a_run_sends_its_ids_to_the_model_and_the_embedder_and_logs_them(ollama):
    ollama.enqueue(
        ScriptedReply(status=503, headers={"Retry-After": "0"}),
        ScriptedReply(text_reply("Hello.")),
    )
    model = OllamaChatModel(  # one retry, to have the model backend log a line during the run
        ollama.url,
        DEFAULT_MODEL,
        retry=RetryPolicy(attempts=2, base_delay=0.01),
        timeouts=Timeouts(connect=2, first_byte=10, idle=10),
    )
    settings = {
        "retrieval": "always",
        "embedder": "ollama",
        "embed_url": ollama.url,
        "embed_model": DEFAULT_MODEL,
    }
    body = run_body()
    handler = Lines(JsonFormatter())
    logging.getLogger("agent_server.backends.resilience").addHandler(handler)
    try:
        async with (
            citadel(model, **settings) as url,
            httpx.AsyncClient(base_url=url) as client,
        ):
            status, events = await stream(client, "/agui", body, {"X-Request-ID": "req-run-1"})
            searched = await client.post(
                "/rag/query", json={"query": "roses"}, headers={"X-Request-ID": "req-search-1"}
            )
    finally:
        logging.getLogger("agent_server.backends.resilience").removeHandler(handler)
    assert status == 200 and types(events)[-1] == "RUN_FINISHED"
    assert searched.status_code == 200
    # Both attempts at the model, and the run's search, name the request and the run.
    assert len(ollama.request_headers) == 2
    for headers in [*ollama.request_headers, ollama.embed_headers[0]]:
        assert headers["x-request-id"] == "req-run-1"
        assert headers["x-citadel-run-id"] == body["runId"]
    # A search outside any run names only its request.
    assert ollama.embed_headers[-1]["x-request-id"] == "req-search-1"
    assert "x-citadel-run-id" not in ollama.embed_headers[-1]
    [retried] = [orjson.loads(line) for line in handler.lines]
    assert "retry 1/1" in retried["message"]
    assert retried["requestId"] == "req-run-1"
    assert (retried["threadId"], retried["runId"]) == (body["threadId"], body["runId"])


def test_the_format_defaults_to_json_in_production_and_text_in_development():
    root = logging.getLogger()
    handlers, level = root.handlers, root.level
    chosen = {}
    try:
        for env, given in [("production", None), ("development", None), ("production", "text")]:
            configure_logging(Settings(env=env, log_format=given, log_level="warning"))
            [handler] = root.handlers
            chosen[env, given] = type(handler.formatter), root.level
    finally:
        root.handlers = handlers
        root.setLevel(level)
    assert chosen == {
        ("production", None): (JsonFormatter, logging.WARNING),
        ("development", None): (TextFormatter, logging.WARNING),
        ("production", "text"): (TextFormatter, logging.WARNING),
    }


async def test_citadel_serve_writes_json_lines_uvicorn_included(ollama, unused_tcp_port, tmp_path):
    env = {
        **os.environ,
        "CITADEL_LOG_FORMAT": "json",
        "CITADEL_PORT": str(unused_tcp_port),
        "CITADEL_LLM": "ollama",
        "CITADEL_LLM_URL": ollama.url,
        "CITADEL_LLM_MODEL": DEFAULT_MODEL,
        "CITADEL_EMBEDDER": "ollama",
        "CITADEL_EMBED_URL": ollama.url,
        "CITADEL_EMBED_MODEL": DEFAULT_MODEL,
        "CITADEL_STORE": "memory",
        "CITADEL_DATA_DIR": str(tmp_path),
        "CITADEL_DEMO_DOCS": "",
    }
    server = await asyncio.create_subprocess_exec(
        *CITADEL, "serve", env=env, stderr=asyncio.subprocess.PIPE
    )
    body = run_body()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{unused_tcp_port}") as client:
            async with asyncio.timeout(30):
                while True:
                    try:
                        await client.get("/health")
                        break
                    except httpx.ConnectError:
                        await asyncio.sleep(0.05)
            secret = {"Authorization": "Bearer not-to-be-logged"}
            status, _ = await stream(client, "/agui", body, {"X-Request-ID": "req-serve", **secret})
    finally:
        server.terminate()
        async with asyncio.timeout(30):
            _, stderr = await server.communicate()
    assert status == 200
    lines = [orjson.loads(line) for line in stderr.decode().splitlines()]
    assert {"uvicorn.error", "uvicorn.access", "citadel"} <= {line["logger"] for line in lines}
    [access] = [line for line in lines if "POST /agui" in line["message"]]
    assert access["logger"] == "uvicorn.access" and access["requestId"] == "req-serve"
    # httpx's line about the call to the model, made by the run
    [model_call] = [line for line in lines if "/api/chat" in line["message"]]
    assert (model_call["requestId"], model_call["runId"]) == ("req-serve", body["runId"])
    assert "not-to-be-logged" not in stderr.decode()
    assert all("color_message" not in line for line in lines)
