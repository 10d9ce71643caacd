"""Which thread a LiveKit job speaks in: its dispatch metadata (written by the server into the
user's signed token) must name a thread and a user, and the thread must be that user's or
new. The store is the real Postgres; no model is asked anything."""

from __future__ import annotations

import pytest

from agent_server.store.base import RunStart
from protocol.errors import Refusal
from tests.conftest import double_model
from tests.voice.services import services_on_their_loop
from voice.speech.stack import SpeechConfig, speech_stack
from voice.token import dispatch_metadata
from voice.worker import Dispatch, VoiceWorker, read_dispatch


def test_the_metadata_the_server_writes_is_read_back():
    assert read_dispatch(dispatch_metadata("user_1", "thread_1")) == Dispatch(
        thread_id="thread_1", user_id="user_1"
    )


@pytest.mark.parametrize(
    "metadata",
    [
        "",  # a job dispatched with no metadata (LiveKit sends an empty string)
        "not json",
        "[]",
        "null",
        '{"threadId": "thread_1"}',
        '{"userId": "user_1"}',
        '{"threadId": 1, "userId": "user_1"}',
        '{"threadId": "thread_1", "userId": ""}',
        '{"threadId": "a thread", "userId": "user_1"}',
    ],
)
def test_metadata_that_names_no_thread_and_user_is_refused(metadata):
    with pytest.raises(Refusal) as refused:
        read_dispatch(metadata)
    assert refused.value.code == "invalid_input"


async def test_a_job_may_speak_only_in_a_thread_of_its_user_or_a_new_one(ollama):
    model = lambda: double_model(ollama)  # noqa: E731 - made on the services' loop
    async with services_on_their_loop(model, retrieval="off") as (services, home):
        for owner, thread in (("user_a", "thread_a"), ("user_b", "thread_b")):
            message = {"id": f"m_{thread}", "role": "user", "content": "hello"}
            await home.call(services.store.start_run(RunStart(thread, "r1", owner, "", [message])))
        stack = speech_stack(SpeechConfig.from_settings(services.settings))
        worker = VoiceWorker(services, home, stack)

        own = await worker.admit(dispatch_metadata("user_a", "thread_a"))
        new = await worker.admit(dispatch_metadata("user_a", "thread_new"))
        assert (own.thread_id, new.thread_id) == ("thread_a", "thread_new")
        with pytest.raises(Refusal) as refused:
            await worker.admit(dispatch_metadata("user_a", "thread_b"))
        assert refused.value.code == "thread_not_found"
        with pytest.raises(Refusal) as refused:
            await worker.admit("")
        assert refused.value.code == "invalid_input"
