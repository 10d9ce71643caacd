"""The run API from another event loop, as the LiveKit worker's jobs use it: the services on a
loop of their own, in a thread; the test on its loop. The store is the real Postgres; the
chat model is the Ollama backend on OllamaDouble (a TEST DOUBLE: no Ollama server runs
here)."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from protocol.errors import Refusal
from protocol.input import RunAgentInput, UserMessage
from tests.conftest import double_model
from tests.doubles.ollama import ScriptedReply, text_reply
from tests.voice.services import services_on_their_loop
from voice.services_loop import LoopRuns


def run_input(thread_id: str, run_id: str) -> RunAgentInput:
    message = UserMessage(id=f"msg_{run_id}", role="user", content="hello")
    return RunAgentInput(thread_id=thread_id, run_id=run_id, messages=[message])


async def test_a_run_is_followed_refused_and_stopped_from_another_loop(ollama):
    ollama.enqueue(ScriptedReply(text_reply("Never said."), gate=asyncio.Event()))
    model = lambda: double_model(ollama)  # noqa: E731 - made on the services' loop
    async with services_on_their_loop(model, retrieval="off") as (services, home):
        runs = LoopRuns(services.runs, home)
        stream = await runs.start("user_a", run_input("thread_a", "run_a"))
        first = await anext(stream)
        assert orjson.loads(first.data[0])["type"] == "RUN_STARTED"
        await ollama.wait_for_requests()  # the run waits for the model, which waits for us

        # A refusal on the services' loop is raised on the caller's.
        with pytest.raises(Refusal) as busy:
            await runs.start("user_a", run_input("thread_a", "run_b"))
        assert busy.value.code == "thread_busy"

        # Closing the stream stops following the run, not the run: it is still there to stop.
        await stream.aclose()
        with pytest.raises(StopAsyncIteration):
            await anext(stream)
        assert await runs.stop("user_a", "thread_a", "run_a") == "run_a"
        record = await home.call(services.store.get_run("thread_a", "run_a"))
    assert record is not None and record.status == "cancelled"
