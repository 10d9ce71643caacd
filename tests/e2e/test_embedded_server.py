"""The default install end to end: ``citadel serve`` on embedded defaults (the real SmolLM2 in
llama.cpp, no configuration), then ``citadel chat`` and the real AG-UI clients against it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.support.agui import run_with_client, run_with_validator, types, user

pytestmark = [pytest.mark.slow, pytest.mark.node]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
async def embedded_server(tmp_path_factory) -> AsyncIterator[str]:
    async with serving(tmp_path_factory.mktemp("data")) as url:
        yield url


@pytest.fixture(scope="module")
async def model_guided_server(tmp_path_factory) -> AsyncIterator[str]:
    """Routed by the runtime, but the model writes answers and makes the small talk."""
    async with serving(tmp_path_factory.mktemp("data"), CITADEL_GUIDED="model") as url:
        yield url


@contextlib.asynccontextmanager
async def serving(data_dir: Path, **settings: str) -> AsyncIterator[str]:
    port = _free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("CITADEL_")}
    env |= {"CITADEL_DATA_DIR": str(data_dir), **settings}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agent_server.cli", "serve", "--port", str(port), env=env
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with asyncio.timeout(120), httpx.AsyncClient() as client:
            while True:  # /ready loads the model
                try:
                    if (await client.get(f"{url}/ready", timeout=60)).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert process.returncode is None, "citadel serve exited during start-up"
                await asyncio.sleep(0.2)
        yield url
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 30)


async def test_citadel_chat_streams_an_answer(embedded_server):
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agent_server.cli",
        "chat",
        "hello",
        "--url",
        embedded_server,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(120):
        stdout, stderr = await process.communicate()
    assert process.returncode == 0, stderr.decode()
    assert stdout.decode().strip(), "no answer text was streamed"


# The real model answers in up to 512 tokens: on two busy cores a run can take a minute or
# two. The limits only tell a hung run from a slow one.
REAL_MODEL_RUN = 240.0


@pytest.mark.timeout(900)
@pytest.mark.parametrize("way", ["validator", "1.0.0", "0.0.59"])
async def test_real_model_runs_pass_the_validator_and_real_clients(embedded_server, way):
    runs = [{"appendMessages": [user("What is 12 * 12?")]}, {"appendMessages": [user("Thanks!")]}]
    thread_id = f"e2e-{way}"
    if way == "validator":
        results = await run_with_validator(
            embedded_server, runs, {}, thread_id, run_timeout=REAL_MODEL_RUN
        )
    else:
        results = await run_with_client(
            embedded_server, way, runs, {}, thread_id, run_timeout=REAL_MODEL_RUN
        )
    for result in results:
        assert result.get("error") is None, result["error"]
        assert not result["runErrors"], result["runErrors"]
        kinds = types(result["events"])
        assert kinds[0] == "RUN_STARTED" and kinds[-1] == "RUN_FINISHED"
        assert kinds.count("TOOL_CALL_START") == kinds.count("TOOL_CALL_RESULT")
        assert "TEXT_MESSAGE_CONTENT" in kinds
    arithmetic, thanks = (result["events"] for result in results)
    # Guided (the embedded default): the runtime calls the calculator with the user's
    # expression and writes the answer, and answers small talk itself.
    assert tool_names(arithmetic) == ["calculate"] and "144" in answer_text(arithmetic)
    assert tool_names(thanks) == [] and answer_text(thanks) == "You're welcome!"


@pytest.mark.timeout(600)
async def test_the_real_model_makes_small_talk_with_no_tool_when_guided_by_model(
    model_guided_server,
):
    runs = [{"appendMessages": [user("Hello!")]}]
    [result] = await run_with_validator(
        model_guided_server, runs, {}, "e2e-model", run_timeout=REAL_MODEL_RUN
    )
    assert result.get("error") is None and not result["runErrors"], result
    events = result["events"]
    assert tool_names(events) == [] and answer_text(events).strip()
    usage = events[-1].get("usage")
    assert usage and usage[0]["provider"] == "embedded" and usage[0]["outputTokens"] > 0


def tool_names(events: list[dict]) -> list[str]:
    return [event["toolCallName"] for event in events if event["type"] == "TOOL_CALL_START"]


def answer_text(events: list[dict]) -> str:
    return "".join(event["delta"] for event in events if event["type"] == "TEXT_MESSAGE_CONTENT")
