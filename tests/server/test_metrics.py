"""``GET /metrics``: Prometheus' own text parser reads it, and the numbers move with runs,
requests and refusals. The chat model is the Ollama backend on OllamaDouble (a TEST DOUBLE:
no Ollama server runs here)."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import citadel, double_model
from tests.doubles.ollama import ScriptedReply, text_reply, tool_call_reply
from tests.server.test_access import run_body
from tests.support.agui import stream, types
from tests.support.clerk import bearer, clerk_settings, session_token


async def scrape(client: httpx.AsyncClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of ``/metrics``, by name and labels."""
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


async def test_metrics_parse_and_move_with_runs_requests_and_refusals(ollama):
    ollama.enqueue(
        ScriptedReply(tool_call_reply([("calculate", {"expression": "17 * 23"})])),
        ScriptedReply(text_reply("391.")),
    )
    token = bearer(session_token())
    async with (
        citadel(double_model(ollama), **clerk_settings(rate_runs="1/min")) as url,
        httpx.AsyncClient(base_url=url) as client,
    ):
        before = await scrape(client)  # without credentials, like a Prometheus server
        status, events = await stream(client, "/agui", run_body(), token)
        limited = await client.post("/agui", json=run_body(), headers=token)
        refused = await client.get("/threads", headers=bearer("x.y.z"))
        await client.get("/threads", headers=token)
        searched = await client.post("/rag/query", json={"query": "x"}, headers=token)
        after = await scrape(client)
    assert status == 200 and types(events)[-1] == "RUN_FINISHED"
    assert limited.status_code == 429 and refused.status_code == 401
    assert searched.status_code == 200

    def moved(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    run_labels = {"status": "succeeded", "outcome": "success", "error_code": ""}
    assert moved("citadel_runs_total", **run_labels) == 1
    assert moved("citadel_http_requests_total", method="POST", route="/agui", status="200") == 1
    assert moved("citadel_http_requests_total", method="GET", route="/threads", status="200") == 1
    assert moved("citadel_rate_limited_total", kind="runs") == 1
    assert moved("citadel_auth_refusals_total", reason="malformed") == 1
    assert moved("citadel_tool_calls_total", tool="calculate", result="ok") == 1
    assert moved("citadel_tool_call_duration_seconds_count", tool="calculate") == 1
    assert moved("citadel_retrieval_duration_seconds_count", mode="hybrid") == 1
    assert after[("citadel_runs_active", ())] == 0 and after[("citadel_streams_open", ())] == 0
    assert ("citadel_embedding_cache_lookups_total", (("result", "miss"),)) in after
    durations = [key for key in after if key[0] == "citadel_http_request_duration_seconds_count"]
    assert durations
