"""The knowledge base in AG-UI runs: search as a tool call whose result carries the hits, the
"always" policy, and retrieval that is down. Every run goes through ag-ui-validate and both
real ``@ag-ui/client`` versions. The chat model is the Ollama backend on OllamaDouble (a TEST
DOUBLE: no Ollama server runs here); embedder, vector engine and database are real."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import citadel, double_model
from tests.doubles.ollama import ScriptedReply, text_reply, tool_call_reply
from tests.server.test_agui_scenarios import WAYS, assistant_texts, play
from tests.support.agui import types, user

pytestmark = pytest.mark.node

HANDBOOK = [
    {
        "name": "handbook/garden.md",
        "text": "# Gardening\n\n## Pruning roses\nPrune roses in late winter, just as the buds "
        "swell, cutting above an outward-facing bud.\n\n## Watering tomatoes\nWater tomatoes "
        "deeply twice a week, early in the morning.",
    },
    {
        "name": "handbook/kitchen.md",
        "text": "# Kitchen\n\n## Sourdough starter\nFeed the starter equal weights of flour "
        "and water every day; it is ready when it doubles within six hours.",
    },
]


async def ingest(url: str, documents: list[dict[str, Any]]) -> dict:
    async with httpx.AsyncClient(base_url=url) as client:
        queued = await client.post("/rag/ingest", json={"documents": documents})
        assert queued.status_code == 202, queued.text
        return await wait_for_job(client, queued.headers["location"])


async def wait_for_job(client: httpx.AsyncClient, location: str) -> dict:
    """The job at ``location`` once it has ended."""
    async with asyncio.timeout(60):
        while True:
            job = (await client.get(location)).json()["job"]
            if job["status"] not in ("queued", "running"):
                return job
            await asyncio.sleep(0.05)


def tool_result(run: dict, name: str) -> Any:
    starts = {
        e["toolCallId"]: e["toolCallName"] for e in run["events"] if e["type"] == "TOOL_CALL_START"
    }
    [result] = [
        e
        for e in run["events"]
        if e["type"] == "TOOL_CALL_RESULT" and starts[e["toolCallId"]] == name
    ]
    return orjson.loads(result["content"])


@pytest.mark.parametrize("way", WAYS)
async def test_the_model_searches_and_cites(way, ollama):
    ollama.enqueue(
        ScriptedReply(tool_call_reply([("search_knowledge_base", {"query": "pruning roses"})])),
        ScriptedReply(text_reply("Prune them in late winter [handbook/garden.md].")),
    )
    async with citadel(double_model(ollama), retrieval="auto") as url:
        job = await ingest(url, HANDBOOK)
        assert job["status"] == "succeeded" and job["filesDone"] == 2
        [run] = await play(way, url, [{"appendMessages": [user("When do I prune roses?")]}])
    found = tool_result(run, "search_knowledge_base")
    best = found["hits"][0]
    assert best["source"] == "handbook/garden.md" and "late winter" in best["snippet"]
    assert best["headings"] == ["Gardening", "Pruning roses"] and 0 < best["score"] <= 1
    assert assistant_texts(run["messages"])[-1].endswith("[handbook/garden.md].")
    # The sources are in the shared state too, for the panel to list.
    [state] = [e["snapshot"] for e in run["events"] if e["type"] == "STATE_SNAPSHOT"]
    assert state["sources"][0] == {
        "source": "handbook/garden.md",
        "title": "Gardening",
        "score": best["score"],
    }
    # The model read the hits, and was told to cite them.
    second = ollama.requests[-1]["messages"]
    assert second[-1]["role"] == "tool" and "late winter" in second[-1]["content"]
    assert "cite each source" in second[0]["content"]


@pytest.mark.parametrize("way", WAYS)
async def test_always_searches_before_the_model_answers(way, ollama):
    ollama.enqueue(ScriptedReply(text_reply("Feed it daily [handbook/kitchen.md].")))
    async with citadel(double_model(ollama), retrieval="always") as url:
        await ingest(url, HANDBOOK)
        [run] = await play(
            way, url, [{"appendMessages": [user("How do I keep my sourdough starter going?")]}]
        )
    kinds = types(run["events"])
    assert (
        kinds.index("TOOL_CALL_START")
        < kinds.index("TOOL_CALL_RESULT")
        < kinds.index("TEXT_MESSAGE_START")
    )
    found = tool_result(run, "search_knowledge_base")
    assert found["query"] == "How do I keep my sourdough starter going?"
    assert found["hits"][0]["source"] == "handbook/kitchen.md"
    [request] = ollama.requests  # one model call: the search needed none
    assert "flour" in request["messages"][-1]["content"]
    offered = {tool["function"]["name"] for tool in request["tools"]}
    # The runtime searches; the model is offered neither knowledge tool.
    assert offered == {"get_current_time", "calculate", "update_plan"}


@pytest.mark.parametrize("way", WAYS)
async def test_retrieval_down_degrades_to_an_answer_without_sources(way, ollama, unused_tcp_port):
    ollama.enqueue(
        ScriptedReply(tool_call_reply([("search_knowledge_base", {"query": "roses"})])),
        ScriptedReply(text_reply("I cannot reach the knowledge base right now.")),
    )
    down = {"retrieval": "auto", "qdrant_url": f"http://127.0.0.1:{unused_tcp_port}"}
    async with citadel(double_model(ollama), **down) as url:
        [run] = await play(way, url, [{"appendMessages": [user("When do I prune roses?")]}])
    assert tool_result(run, "search_knowledge_base")["error"].startswith("retrieval_unavailable")
    assert types(run["events"])[-1] == "RUN_FINISHED"
    assert assistant_texts(run["messages"])[-1] == "I cannot reach the knowledge base right now."
