"""``GET /admin/logs``: the ring buffer of this worker's log lines, its filters, following it as
SSE, its bounds, and who may read it. The apps run in-process, so the test logs lines into
them directly; the chat model is the Ollama backend on OllamaDouble (a TEST DOUBLE: no
Ollama server runs here)."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from agent_server.config import Settings
from agent_server.observability.log_buffer import (
    MAX_FIELD_CHARS,
    MAX_PENDING,
    LogBuffer,
    LogFilter,
    capture_logs,
)
from agent_server.observability.logs import bind_request, bind_run
from agent_server.observability.redaction import Redactor
from protocol.framing import SSE_KEEPALIVE, parse_sse_stream
from tests.conftest import citadel, double_model
from tests.server.test_access import server
from tests.support.clerk import admin_token, bearer, session_token
from tests.support.waiting import PATIENCE

LOGGER = "tests.admin_logs"
FUTURE = 2_000_000_000.0  # 2033-05-18T03:33:20Z: later than any line the app logs itself


def log(
    message: str,
    level: int = logging.INFO,
    *,
    request: str | None = None,
    run: tuple[str, str] | None = None,
    created: float | None = None,
    handler: logging.Handler | None = None,
) -> None:
    """A line as the server would log it, in a request and a run when given, at ``created``
    when given; through ``handler`` only, or the usual way (the root logger's handlers)."""
    fields = {"name": LOGGER, "levelno": level, "levelname": logging.getLevelName(level)}
    fields["msg"] = message
    if created is not None:
        fields["created"] = created
    record = logging.makeLogRecord(fields)

    def inside() -> None:
        if request is not None:
            bind_request(request)
        if run is not None:
            bind_run(*run)
        (handler or logging.getLogger(LOGGER)).handle(record)

    contextvars.copy_context().run(inside)


@contextlib.asynccontextmanager
async def app(ollama, **settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    """An app with authentication off (the local user is an administrator)."""
    async with (
        citadel(double_model(ollama), store="memory", retrieval="off", **settings) as url,
        httpx.AsyncClient(base_url=url, timeout=PATIENCE) as client,
    ):
        yield client


def messages(answer: httpx.Response) -> list[str]:
    assert answer.status_code == 200, answer.text
    return [line["message"] for line in answer.json()["lines"]]


# Reading -------------------------------------------------------------------------------------


async def test_lines_are_filtered_by_level_request_thread_run_and_time_newest_last(ollama):
    log("a", logging.DEBUG, request="req-1", created=FUTURE)
    async with app(ollama) as client:
        log("b", logging.DEBUG, request="req-1", created=FUTURE)
        log("c", logging.INFO, request="req-1", run=("t-1", "r-1"), created=FUTURE + 1)
        log("d", logging.WARNING, request="req-2", run=("t-1", "r-2"), created=FUTURE + 2)
        log("e", logging.ERROR, request="req-2", created=FUTURE + 3)
        log("f", logging.CRITICAL, created=FUTURE + 4)

        async def read(**params: str) -> list[str]:
            since = {"since": "2033-05-18T03:33:20Z"}
            return messages(await client.get("/admin/logs", params=since | params))

        everything = await read()
        by_level = await read(level="warning"), await read(level="ERROR")
        by_request = await read(requestId="req-1")
        by_thread, by_run = await read(threadId="t-1"), await read(runId="r-2")
        later = await read(since="2033-05-18T03:33:22.000+00:00")
        newest = await read(limit="2")
        both = await read(requestId="req-2", level="error")
        [line] = (await client.get("/admin/logs", params={"runId": "r-1"})).json()["lines"]
    assert everything == ["b", "c", "d", "e", "f"]  # "a" came before the app
    assert by_level == (["d", "e", "f"], ["e", "f"])
    assert by_request == ["b", "c"]
    assert (by_thread, by_run) == (["c", "d"], ["d"])
    assert later == ["d", "e", "f"] and newest == ["e", "f"] and both == ["e"]
    assert line == {
        "time": "2033-05-18T03:33:21.000Z",
        "level": "INFO",
        "logger": LOGGER,
        "message": "c",
        "requestId": "req-1",
        "threadId": "t-1",
        "runId": "r-1",
    }


async def test_malformed_filters_are_refused_with_422(ollama):
    async with app(ollama) as client:
        answers = [
            await client.get("/admin/logs", params=params)
            for params in (
                {"level": "loud"},
                {"since": "yesterday"},
                {"limit": "0"},
                {"limit": "10001"},
                {"requestId": "x" * 257},
                {"follow": "maybe"},
            )
        ]
    assert [answer.status_code for answer in answers] == [422] * 6
    assert {answer.json()["error"]["code"] for answer in answers} == {"invalid_input"}
    assert "level must be one of debug, info, warning, error, critical" in answers[0].text


# Bounds --------------------------------------------------------------------------------------


def test_the_buffer_keeps_the_newest_lines_and_drops_the_oldest():
    buffer = LogBuffer(10, Redactor())
    for number in range(25):
        log(str(number), handler=buffer)
    assert [line["message"] for line in buffer.recent(LogFilter(), 100)] == [
        str(number) for number in range(15, 25)
    ]


def test_a_long_field_keeps_its_head_and_its_tail():
    buffer = LogBuffer(10, Redactor())
    log("h" * 50_000 + "t" * 50_000, handler=buffer)
    [line] = buffer.recent(LogFilter(), 1)
    kept = MAX_FIELD_CHARS // 2
    message = line["message"]
    assert message.startswith("h" * kept + "…[") and message.endswith("]…" + "t" * kept)
    assert f"[{100_000 - 2 * kept} characters cut]" in message


def test_each_app_buffer_is_on_the_root_logger_only_while_the_app_runs():
    root = logging.getLogger()
    with capture_logs(Settings(log_buffer_lines=10)) as first, capture_logs(Settings()) as second:
        assert {first, second} <= set(root.handlers)
        log("seen by both")
    log("seen by neither")
    assert first not in root.handlers and second not in root.handlers
    for buffer in (first, second):
        assert [line["message"] for line in buffer.recent(LogFilter(), 10)] == ["seen by both"]


async def test_the_app_keeps_citadel_log_buffer_lines_lines(ollama):
    logged = [f"line {number}" for number in range(30)]
    async with app(ollama, log_buffer_lines=10) as client:
        for message in logged:
            log(message, created=FUTURE)
        kept = messages(await client.get("/admin/logs", params={"since": "2033-01-01T00:00:00Z"}))
    # Nothing else logs in between here; at most, a line of the app's would push one out.
    assert 0 < len(kept) <= 10 and kept == logged[-len(kept) :]


# Following -----------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def following(
    client: httpx.AsyncClient, **params: str
) -> AsyncIterator[AsyncIterator[dict[str, Any]]]:
    """The lines of ``GET /admin/logs?follow=true``, as they come."""
    async with client.stream(
        "GET", "/admin/logs", params={"follow": "true", **params}, timeout=None
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        yield aiter(parse_sse_stream(response.aiter_bytes()))


async def next_line(lines: AsyncIterator[dict[str, Any]]) -> dict[str, Any]:
    async with asyncio.timeout(PATIENCE):
        return await anext(lines)


async def test_following_sends_the_recent_lines_then_each_new_one_that_passes(ollama):
    async with app(ollama) as client:
        log("before", request="follow-1")
        async with following(client, requestId="follow-1") as lines:
            # The recent lines come once the follower is in place: nothing after is missed.
            assert (await next_line(lines))["message"] == "before"
            log("someone else's", request="follow-2")
            log("after", logging.WARNING, request="follow-1")
            after = await next_line(lines)
    assert (after["message"], after["level"], after["requestId"]) == (
        "after",
        "WARNING",
        "follow-1",
    )


async def test_a_follower_that_falls_behind_is_told_how_many_lines_it_missed(ollama):
    async with app(ollama) as client:
        log("start", request="slow")
        async with following(client, requestId="slow") as lines:
            assert (await next_line(lines))["message"] == "start"
            # Logged without yielding to the event loop: the reader cannot keep up, and
            # logging does not wait for it.
            for number in range(MAX_PENDING + 5):
                log(f"burst {number}", request="slow")
            burst = [await next_line(lines) for _ in range(MAX_PENDING + 1)]
    assert [line["message"] for line in burst[:-1]] == [f"burst {n}" for n in range(MAX_PENDING)]
    note = burst[-1]
    assert (note["level"], note["dropped"]) == ("WARNING", 5)
    assert note["message"] == "5 lines dropped here: this reader fell behind"


async def test_a_followed_stream_keeps_alive_when_quiet_and_ends_at_the_time_limit(ollama):
    async with (
        app(ollama, keepalive_interval=0.05, stream_max_duration=0.5) as client,
        client.stream(
            "GET", "/admin/logs", params={"follow": "true", "requestId": "nobody"}
        ) as response,
    ):
        async with asyncio.timeout(PATIENCE):
            body = await response.aread()  # returns: the stream ended by itself
    assert response.status_code == 200
    assert body and body == SSE_KEEPALIVE * body.count(SSE_KEEPALIVE)
    assert b"\r" not in body


# Access --------------------------------------------------------------------------------------


@pytest.mark.parametrize("follow", ["false", "true"])
async def test_only_administrators_read_the_logs(ollama, follow):
    async with server(ollama) as (url, _), httpx.AsyncClient(base_url=url) as client:
        params = {"follow": follow, "limit": "1"}
        denied = await client.get("/admin/logs", params=params, headers=bearer(session_token()))
        anonymous = await client.get("/admin/logs", params=params)
        params |= {"requestId": "nobody"}  # a followed stream with nothing to send: its headers
        async with client.stream(
            "GET", "/admin/logs", params=params, headers=bearer(admin_token())
        ) as allowed:
            status = allowed.status_code
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "forbidden"
    assert anonymous.status_code == 401 and status == 200
