"""The official path keeps working: CopilotKit's own Node runtime (@copilotkit/runtime 1.75,
``CopilotRuntime`` with an ``HttpAgent`` at ``/agui``, as the README shows) relays a run of a
real Citadel server (its model the scripted Ollama TEST DOUBLE) to its client."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import citadel, double_model
from tests.doubles.ollama import OllamaDouble, ScriptedReply, text_reply
from tests.support.agui import new_id, types
from tests.support.node import copilot_runtime

pytestmark = pytest.mark.node


async def test_copilot_runtime_with_an_http_agent_relays_a_citadel_run(ollama: OllamaDouble):
    ollama.enqueue(ScriptedReply(text_reply("Citadel answers through CopilotRuntime.")))
    thread_id = new_id("thread")
    async with citadel(double_model(ollama)) as url:
        report = await copilot_runtime(url, thread_id, "Who answers?")
        async with httpx.AsyncClient(base_url=url) as client:
            thread = (await client.get(f"/threads/{thread_id}")).json()
    assert report["agents"] == ["default"]
    assert report["status"] == 200
    events = report["events"]
    assert types(events)[0] == "RUN_STARTED" and types(events)[-1] == "RUN_FINISHED"
    text = "".join(e["delta"] for e in events if e["type"] == "TEXT_MESSAGE_CONTENT")
    assert text == "Citadel answers through CopilotRuntime."
    assert [(m["role"], m["content"]) for m in thread["messages"]] == [
        ("user", "Who answers?"),
        ("assistant", "Citadel answers through CopilotRuntime."),
    ]
