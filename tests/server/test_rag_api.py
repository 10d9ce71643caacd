"""The knowledge base over REST on real parts (embedded embedder, Qdrant engine, Postgres);
the chat model that answers ``"answer": true`` is the Ollama backend on OllamaDouble (a TEST
DOUBLE: no Ollama server runs here)."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import citadel, double_model
from tests.doubles.ollama import ScriptedReply, text_reply
from tests.server.test_agui_knowledge import HANDBOOK, ingest, wait_for_job
from tests.support.database import isolated_database_url, table_rows


async def test_uploaded_files_are_ingested_in_the_background(ollama):
    async with citadel(double_model(ollama)) as url, httpx.AsyncClient(base_url=url) as client:
        queued = await client.post(
            "/rag/ingest",
            files=[
                ("file", ("garden.md", HANDBOOK[0]["text"].encode(), "text/markdown")),
                ("file", ("broken.pdf", b"%PDF-1.4 nonsense", "application/pdf")),
                (
                    "file",
                    ("notes.txt", b"The spare key is under the third flowerpot.", "text/plain"),
                ),
            ],
            data={"tags": "home, garden"},
        )
        assert queued.status_code == 202, queued.text
        job = queued.json()["job"]
        assert job["status"] == "queued" and job["filesTotal"] == 3
        done = await wait_for_job(client, queued.headers["location"])
        listed = (await client.get("/rag/documents")).json()["documents"]
        found = (await client.post("/rag/query", json={"query": "where is the spare key?"})).json()
        tagged = await client.post(
            "/rag/query", json={"query": "roses", "filters": {"tags": ["garden"]}, "topK": 1}
        )
    assert done["status"] == "partial" and done["filesDone"] == 3
    assert done["errors"] == [
        {"file": "broken.pdf", "code": "corrupt", "message": done["errors"][0]["message"]}
    ]
    assert sorted(item["source"] for item in listed) == ["garden.md", "notes.txt"]
    assert all(item["tags"] == ["garden", "home"] for item in listed)
    assert found["hits"][0]["source"] == "notes.txt"
    assert tagged.json()["hits"][0]["source"] in ("garden.md", "notes.txt")


async def test_query_batch_answer_and_delete(ollama):
    ollama.enqueue(ScriptedReply(text_reply("Prune roses in late winter [1].")))
    async with citadel(double_model(ollama)) as url, httpx.AsyncClient(base_url=url) as client:
        await ingest(url, HANDBOOK)
        batch = (
            await client.post(
                "/rag/batch-query",
                json={"queries": ["pruning roses", "sourdough starter"], "topK": 1},
            )
        ).json()
        answered = (
            await client.post("/rag/query", json={"query": "When to prune roses?", "answer": True})
        ).json()
        [garden] = [
            d for d in (await client.get("/rag/documents")).json()["documents"]
            if d["source"] == "handbook/garden.md"
        ]  # fmt: skip
        deleted = await client.delete(f"/rag/documents/{garden['id']}")
        again = await client.delete(f"/rag/documents/{garden['id']}")
        after = (await client.post("/rag/query", json={"query": "pruning roses"})).json()
    assert [r["hits"][0]["source"] for r in batch["results"]] == [
        "handbook/garden.md",
        "handbook/kitchen.md",
    ]
    assert answered["answer"] == "Prune roses in late winter [1]."
    assert [c["source"] for c in answered["citations"]] == [answered["hits"][0]["source"]]
    assert "late winter" in ollama.requests[-1]["messages"][-1]["content"]
    assert deleted.status_code == 204 and again.status_code == 404
    assert all(hit["source"] != "handbook/garden.md" for hit in after["hits"])


BOILER = [
    {
        "name": f"boiler/{name}.md",
        "text": f"# Boiler\n\n## {title}\n{body}",
    }
    for name, title, body in (
        ("pressure", "Low pressure", "When the gauge reads under one bar the boiler stops "
         "heating; open the filling loop until it reads 1.5 bar."),
        ("ignition", "Ignition fault", "If the burner does not light, the display shows fault "
         "code F28: check that the gas valve is open, then reset the boiler."),
        ("radiators", "Cold radiators", "Radiators that are cold at the top hold air: bleed "
         "them with a radiator key until water comes out."),
        ("service", "Yearly service", "Have the boiler serviced every year by a registered "
         "engineer, before the heating season."),
        ("thermostat", "Thermostat", "The room thermostat switches the boiler on below the "
         "set temperature; put it away from radiators and draughts."),
    )
]  # fmt: skip


async def test_hybrid_search_is_the_default_and_can_be_turned_off(ollama):
    async with citadel(double_model(ollama)) as url, httpx.AsyncClient(base_url=url) as client:
        await ingest(url, BOILER)
        default = (await client.post("/rag/query", json={"query": "F28", "topK": 3})).json()
        dense = (
            await client.post("/rag/query", json={"query": "F28", "topK": 3, "hybrid": False})
        ).json()
        bad = await client.post("/rag/query", json={"query": "F28", "hybrid": "sometimes"})
    # Hybrid (the default): first in both lists, so the fused score is 1/2 + 1/2 (RRF, k=2).
    assert default["hits"][0]["source"] == "boiler/ignition.md"
    assert default["hits"][0]["score"] == 1.0
    # Dense only: the same passage, scored by cosine similarity alone.
    assert dense["hits"][0]["source"] == "boiler/ignition.md"
    assert 0 < dense["hits"][0]["score"] < 0.9
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_input"


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "code"),
    [
        ("POST", "/rag/ingest", {"json": {}}, 422, "invalid_input"),
        ("POST", "/rag/ingest", {"json": {"documents": []}}, 422, "invalid_input"),
        (
            "POST",
            "/rag/ingest",
            {"json": {"knowledgeBase": "../etc", "documents": [{"name": "a", "text": "b"}]}},
            422,
            "invalid_input",
        ),
        (
            "POST",
            "/rag/ingest",
            {"content": b"hello", "headers": {"content-type": "text/plain"}},
            415,
            "unsupported_media_type",
        ),
        ("POST", "/rag/ingest", {"files": [("other", ("a.txt", b"x"))]}, 422, "invalid_input"),
        ("POST", "/rag/query", {"json": {"query": ""}}, 422, "invalid_input"),
        ("POST", "/rag/query", {"json": {"query": "x", "topK": 500}}, 422, "invalid_input"),
        ("POST", "/rag/batch-query", {"json": {"queries": ["x"] * 33}}, 422, "invalid_input"),
        ("GET", "/rag/jobs/not-a-job", {}, 404, "job_not_found"),
        ("DELETE", "/rag/documents/nope", {}, 404, "document_not_found"),
    ],
)
async def test_bad_requests_are_refused_and_change_nothing(
    ollama, method, path, kwargs, status, code
):
    async with (
        isolated_database_url() as database,
        citadel(double_model(ollama), database_url=database) as url,
        httpx.AsyncClient(base_url=url) as client,
    ):
        before = await table_rows(database)
        response = await client.request(method, path, **kwargs)
        after = await table_rows(database)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert after == before


async def test_an_upload_over_the_limit_is_refused_before_reading(ollama):
    async with (
        citadel(double_model(ollama), max_upload_bytes=2048) as url,
        httpx.AsyncClient(base_url=url) as client,
    ):
        response = await client.post("/rag/ingest", files=[("file", ("big.txt", b"x" * 5000))])
    assert response.status_code == 413 and response.json()["error"]["code"] == "payload_too_large"


async def test_retrieval_down_is_a_clear_503(ollama, unused_tcp_port):
    settings = {"qdrant_url": f"http://127.0.0.1:{unused_tcp_port}"}
    async with citadel(double_model(ollama), **settings) as url, httpx.AsyncClient() as client:
        response = await client.post(f"{url}/rag/query", json={"query": "roses"}, timeout=30)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "retrieval_unavailable"


async def test_the_knowledge_base_can_be_off(ollama):
    async with citadel(double_model(ollama), retrieval="off") as url, httpx.AsyncClient() as client:
        response = await client.post(f"{url}/rag/query", json={"query": "roses"})
        capabilities = (await client.get(f"{url}/agui/capabilities")).json()
    assert response.status_code == 404 and response.json()["error"]["code"] == "knowledge_base_off"
    names = [tool["name"] for tool in capabilities["tools"]["items"]]
    assert "search_knowledge_base" not in names
