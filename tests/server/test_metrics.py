"""``GET /metrics``: Prometheus' own text parser reads it, and the numbers move with runs,
requests and refusals. The chat model is the Ollama backend on OllamaDouble (a TEST DOUBLE:
no Ollama server runs here)."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import orjson
from prometheus_client.parser import text_string_to_metric_families

from agent_server.backends.resilience import RetryPolicy
from agent_server.models.ollama import OllamaChatModel
from tests.conftest import citadel, double_model
from tests.doubles.ollama import DEFAULT_MODEL, ScriptedReply, text_reply, tool_call_reply
from tests.server.test_access import run_body
from tests.support.agui import stream, types
from tests.support.clerk import bearer, clerk_settings, session_token
from tests.support.metrics import scrape

DASHBOARD = Path(__file__).parents[2] / "docs" / "grafana" / "citadel.json"


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
    # A run's timings and tokens, the copies of the run logs up to date, the pool, the circuit.
    assert moved("citadel_run_first_event_seconds_count") == 1
    assert moved("citadel_run_first_token_seconds_count") == 1
    assert moved("citadel_model_output_tokens_per_second_count") == 1
    assert moved("citadel_model_tokens_total", kind="output") > 0
    assert moved("citadel_model_tokens_total", kind="input") > 0
    assert after[("citadel_event_log_lag_seconds", (("sink", "store"),))] == 0
    assert after[("citadel_event_log_lag_seconds", (("sink", "bus"),))] == 0
    assert after[("citadel_db_pool_connections", (("state", "max"),))] == 10
    assert after[("citadel_model_circuit_state", (("state", "closed"),))] == 1


async def test_the_circuit_state_shows_a_model_backend_that_is_down(unused_tcp_port):
    down = OllamaChatModel(
        f"http://127.0.0.1:{unused_tcp_port}", DEFAULT_MODEL, retry=RetryPolicy(attempts=1)
    )
    async with (
        citadel(down) as url,
        httpx.AsyncClient(base_url=url) as client,
    ):
        for _ in range(5):
            _, events = await stream(client, "/agui", run_body())
            assert events[-1]["type"] == "RUN_ERROR"
        after = await scrape(client)
    assert after[("citadel_model_circuit_state", (("state", "open"),))] == 1
    assert after[("citadel_model_circuit_state", (("state", "closed"),))] == 0


async def test_the_grafana_dashboard_uses_only_metrics_the_server_exposes(ollama):
    """Every metric the dashboard queries exists on a worker that has served a run: the
    dashboard cannot rot silently when a metric is renamed."""
    dashboard = orjson.loads(DASHBOARD.read_bytes())
    queried = {
        name
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        for name in re.findall(r"\bcitadel_[a-z_]+", target["expr"])
    }
    ollama.enqueue(ScriptedReply(tool_call_reply([("calculate", {"expression": "1+1"})])))
    ollama.enqueue(ScriptedReply(text_reply("2.")))
    async with (
        citadel(double_model(ollama)) as url,
        httpx.AsyncClient(base_url=url) as client,
    ):
        await stream(client, "/agui", run_body())
        await client.post("/rag/query", json={"query": "x"})
        exposed = _declared(await client.get("/metrics"))
    assert len(queried) >= 15
    assert queried - exposed == set()


def _declared(response: httpx.Response) -> set[str]:
    """The sample names each declared family has, samples or not (a labelled counter that
    has not counted yet has none)."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}
    return {
        family.name + suffix
        for family in text_string_to_metric_families(response.text)
        for suffix in suffixes.get(family.type, ("",))
    }
