"""The API contract: the OpenAPI document and its offline docs page, declared policies, bodies
that refuse unknown fields, and text and numbers no store could keep refused before anything
changes."""

from __future__ import annotations

import re
from typing import Annotated

import httpx
import orjson
import pytest
from fastapi import APIRouter, Depends

from agent_server.api.errors import STATUS
from agent_server.api.guard import CALLER, declared_policies
from agent_server.app import ROUTERS
from agent_server.auth.principals import Principal
from agent_server.backends.resilience import RetryPolicy, Timeouts
from agent_server.models.ollama import OllamaChatModel
from tests.conftest import citadel, double_model
from tests.doubles.ollama import DEFAULT_MODEL, ScriptedReply, text_reply
from tests.support import node
from tests.support.agui import new_id, run_input, stream, user
from tests.support.database import isolated_database_url

# The OpenAPI document -------------------------------------------------------------------------

BODIES = {
    ("POST", "/agui"),
    ("POST", "/agui/connect"),
    ("POST", "/agui/stop"),
    ("PATCH", "/threads/{thread_id}"),
    ("POST", "/rag/ingest"),
    ("POST", "/rag/query"),
    ("POST", "/rag/batch-query"),
    ("POST", "/v1/chat/completions"),
    ("POST", "/v1/embeddings"),
    ("POST", "/v1/rerank"),
}


async def test_every_json_operation_declares_its_bodies_answers_and_refusals(ollama):
    async with citadel(double_model(ollama)) as url, httpx.AsyncClient() as client:
        document = (await client.get(f"{url}/openapi.json")).json()
    operations = [
        (method.upper(), path, operation)
        for path, methods in document["paths"].items()
        for method, operation in methods.items()
    ]
    assert len(operations) >= 22
    for method, path, operation in operations:
        responses = operation["responses"]
        assert any(status.startswith("2") for status in responses), (method, path)
        if (method, path) in BODIES:
            assert "requestBody" in operation, (method, path)
        for status, response in responses.items():
            if not status.startswith("2") and "Refused" in response.get("description", ""):
                codes = response["description"].removeprefix("Refused: ").split(", ")
                assert all(STATUS[code] == int(status) for code in codes), (path, status)
    agui = document["paths"]["/agui"]["post"]
    assert agui["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/RunAgentInput"
    }
    assert "text/event-stream" in agui["responses"]["200"]["content"]
    assert "RunAgentInput" in document["components"]["schemas"]
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


async def test_the_docs_page_loads_its_assets_from_this_server_only(ollama):
    async with citadel(double_model(ollama)) as url, httpx.AsyncClient() as client:
        page = await client.get(f"{url}/docs")
        links = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        assets = {link: await client.get(f"{url}{link}") for link in links}
        pointed = re.findall(r"url: '([^']+)'", page.text)
    assert page.status_code == 200 and "swagger-ui" in page.text
    assert links and all(link.startswith("/docs/assets/") for link in links)
    assert all(response.status_code == 200 for response in assets.values())
    script = next(response for link, response in assets.items() if link.endswith(".js"))
    assert len(script.content) > 500_000  # Swagger UI itself, not a stub
    assert "http://" not in page.text and "https://" not in page.text
    assert pointed == ["/openapi.json"]


def test_a_route_without_a_policy_stops_the_app_from_being_built():
    router = APIRouter()

    @router.get("/forgotten")
    async def forgotten() -> dict[str, str]:
        return {}

    with pytest.raises(RuntimeError, match="/forgotten must declare exactly one Policy"):
        declared_policies([router])


def test_every_route_of_the_app_declares_one_policy():
    routes = [route for router in ROUTERS for route in router.routes]
    assert len(declared_policies(ROUTERS)) == len(routes) >= 24

    twice = APIRouter()

    @twice.get("/twice")
    async def both(
        first: Annotated[Principal, Depends(CALLER)], second: Annotated[Principal, Depends(CALLER)]
    ) -> dict[str, str]:
        return {}

    with pytest.raises(RuntimeError, match="exactly one"):
        declared_policies([twice])


# Unknown fields ------------------------------------------------------------------------------


async def test_an_unknown_body_field_is_refused_naming_it_and_the_accepted_names(ollama):
    async with citadel(double_model(ollama)) as url, httpx.AsyncClient() as client:
        response = await client.post(
            f"{url}/rag/query", json={"query": "probe", "kb": "probe", "top_k": 3}
        )
        nested = await client.post(
            f"{url}/rag/query", json={"query": "probe", "filters": {"source": ["a"]}}
        )
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_input"
    assert "kb: unknown field" in error["message"]
    assert "top_k: unknown field (did you mean topK?)" in error["message"]
    assert "accepted: knowledgeBase, topK" in error["message"]
    assert (
        "filters.source: unknown field (did you mean sources?)" in nested.json()["error"]["message"]
    )


async def test_run_agent_input_still_tolerates_unknown_fields(ollama):
    ollama.enqueue(ScriptedReply(text_reply("fine")))
    async with citadel(double_model(ollama)) as url, httpx.AsyncClient() as client:
        body = {**run_input(new_id("thread"), new_id("run")), "newerClientField": {"x": 1}}
        status, events = await stream(client, f"{url}/agui", body)
    assert status == 200 and events[-1]["type"] == "RUN_FINISHED"


# What no store could keep ----------------------------------------------------------------------


async def test_a_nul_in_a_user_message_is_refused_and_stores_nothing(ollama):
    async with (
        isolated_database_url() as database,
        citadel(double_model(ollama), database_url=database) as url,
        httpx.AsyncClient() as client,
    ):
        thread_id = new_id("thread")
        body = run_input(thread_id, new_id("run"), "hello \u0000 world")
        response = await client.post(f"{url}/agui", content=orjson.dumps(body))
        missing = await client.get(f"{url}/threads/{thread_id}")
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_input" and "messages[0].content" in error["message"]
    assert "NUL" in error["message"]
    assert missing.status_code == 404
    assert ollama.requests == []


async def test_a_nul_title_is_refused_and_the_connection_serves_the_next_request(ollama):
    ollama.enqueue(ScriptedReply(text_reply("answer")))
    async with citadel(double_model(ollama)) as url, httpx.AsyncClient() as client:
        thread_id = new_id("thread")
        await stream(client, f"{url}/agui", run_input(thread_id, new_id("run")))
        refused = await client.patch(f"{url}/threads/{thread_id}", json={"title": "a\u0000b"})
        lone = await client.patch(
            f"{url}/threads/{thread_id}",
            content=b'{"title": "half \\ud800 a pair"}',
            headers={"content-type": "application/json"},
        )
        after = await client.get(f"{url}/threads/{thread_id}")
    assert (refused.status_code, lone.status_code) == (422, 422)
    assert "title" in refused.json()["error"]["message"]
    assert after.status_code == 200 and "\u0000" not in after.json()["title"]


@pytest.mark.parametrize(
    "query",
    [
        "before=9223372036854775808",
        "before=-1",
        "limit=100000000000000000000",
        "actor=%00",
        "before=%C2%B2",  # a superscript two: a digit to str.isdigit, not to int()
    ],
)
async def test_query_parameters_out_of_range_are_refused(ollama, query):
    async with citadel(double_model(ollama)) as url, httpx.AsyncClient() as client:
        response = await client.get(f"{url}/admin/audit?{query}")
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_input"


async def test_times_beyond_the_calendar_and_foreign_event_ids_are_refused(ollama):
    async with citadel(double_model(ollama)) as url, httpx.AsyncClient() as client:
        since = await client.get(f"{url}/admin/runs", params={"since": "0001-01-01T00:00:00+14:00"})
        connect = await client.post(
            f"{url}/agui/connect",
            json={"threadId": "t"},
            headers={"Last-Event-ID": "run:99999999999999999999"},
        )
    assert since.status_code == 422
    assert connect.status_code == 422 and connect.json()["error"]["code"] == "invalid_event_id"


async def test_a_nul_the_model_writes_is_stored_as_a_replacement_character(ollama):
    ollama.enqueue(ScriptedReply(text_reply("before\u0000after", chunks=1)))
    async with citadel(double_model(ollama)) as url, httpx.AsyncClient() as client:
        thread_id = new_id("thread")
        status, events = await stream(client, f"{url}/agui", run_input(thread_id, new_id("run")))
        thread = (await client.get(f"{url}/threads/{thread_id}")).json()
    assert status == 200 and events[-1]["type"] == "RUN_FINISHED"
    assert thread["messages"][-1]["content"] == "before\ufffdafter"


async def test_an_id_that_json_allows_but_a_header_cannot_carry_is_refused(ollama):
    async with citadel(double_model(ollama)) as url, httpx.AsyncClient() as client:
        body = {**run_input(new_id("thread"), new_id("run")), "messages": [user("x")]}
        body["runId"] = "run\u0000id"
        response = await client.post(f"{url}/agui", content=orjson.dumps(body))
    assert response.status_code == 422 and "runId" in response.json()["error"]["message"]


async def test_a_backend_url_password_never_reaches_the_client_or_the_run_history(
    ollama, unused_tcp_port
):
    model = OllamaChatModel(
        f"http://citadel:hunter2-secret@127.0.0.1:{unused_tcp_port}",
        DEFAULT_MODEL,
        retry=RetryPolicy(attempts=1),
        timeouts=Timeouts(connect=2, first_byte=5, idle=5),
    )
    async with citadel(model) as url, httpx.AsyncClient() as client:
        status, events = await stream(client, f"{url}/agui", run_input(new_id("t"), new_id("r")))
        runs = (await client.get(f"{url}/admin/runs")).text
    assert status == 200 and events[-1]["type"] == "RUN_ERROR"
    assert events[-1]["code"] == "model_unavailable"
    assert "127.0.0.1" in events[-1]["message"]  # where it failed is still said
    assert "hunter2" not in orjson.dumps(events).decode() and "hunter2" not in runs


@pytest.mark.node
async def test_the_docs_page_renders_every_operation_in_chromium_with_no_network(ollama):
    async with citadel(double_model(ollama)) as url, httpx.AsyncClient() as client:
        document = (await client.get(f"{url}/openapi.json")).json()
        report = await node.docs_page(f"{url}/docs")
    operations = sum(len(methods) for methods in document["paths"].values())
    assert report["offHost"] == [] and report["failed"] == []
    assert report["operations"] == operations
    assert "/agui" in [title.replace("\u200b", "") for title in report["titles"]]
