"""Ingestion while the embedding server is down, and once it is back, on real parts (the
Ollama embedder client, the Qdrant engine, Postgres). The embedding server is OllamaDouble
(a TEST DOUBLE: no Ollama server runs here) behind a TCP proxy the test cuts: the embedder
gets the connection errors of a server that is down."""

from __future__ import annotations

import httpx

from tests.conftest import citadel, double_model
from tests.doubles.ollama import DEFAULT_MODEL, OllamaDouble
from tests.server.test_agui_knowledge import wait_for_job
from tests.support.proxy import TcpProxy

EMBED_MODEL = "nomic-embed-text:latest"
FILES = [
    {"name": "garden.md", "text": "# Garden\n\nPrune roses in late winter."},
    {"name": "notes.txt", "text": "The spare key is under the third flowerpot."},
]


async def test_an_ingestion_job_fails_its_files_while_the_embedder_is_down_then_succeeds():
    """While the embedding server is down: the job fails, each file with a
    ``retrieval_unavailable`` error naming the embedder; nothing of the files is stored (no
    document, no chunk to find once the embedder is back); searches answer 503. Once it is
    back the same job succeeds and the files are found."""
    async with (
        OllamaDouble(models=[DEFAULT_MODEL, EMBED_MODEL]) as ollama,
        TcpProxy("127.0.0.1", int(ollama.url.rsplit(":", 1)[1])) as proxy,
        citadel(
            double_model(ollama),
            embedder="ollama",
            embed_url=f"http://127.0.0.1:{proxy.port}",
            embed_model=EMBED_MODEL,
        ) as url,
        httpx.AsyncClient(base_url=url) as client,
    ):
        proxy.cut()
        queued = await client.post("/rag/ingest", json={"documents": FILES})
        failed = await wait_for_job(client, queued.headers["location"])
        stored_while_down = (await client.get("/rag/documents")).json()["documents"]
        search_while_down = await client.post("/rag/query", json={"query": "spare key"})
        embed_requests_while_down = len(ollama.embed_requests)

        proxy.restore()
        found_before = (await client.post("/rag/query", json={"query": "spare key"})).json()
        requeued = await client.post("/rag/ingest", json={"documents": FILES})
        succeeded = await wait_for_job(client, requeued.headers["location"])
        stored = (await client.get("/rag/documents")).json()["documents"]
        found = (await client.post("/rag/query", json={"query": "spare key flowerpot"})).json()

    assert queued.status_code == 202 and failed["status"] == "failed"
    assert failed["filesDone"] == 2 and failed["chunksEmbedded"] == 0
    assert [(e["file"], e["code"]) for e in failed["errors"]] == [
        ("garden.md", "retrieval_unavailable"),
        ("notes.txt", "retrieval_unavailable"),
    ]
    assert all(
        e["message"].startswith(f"embedder ollama at http://127.0.0.1:{proxy.port}: ")
        for e in failed["errors"]
    )
    assert embed_requests_while_down == 0
    assert stored_while_down == []
    assert search_while_down.status_code == 503
    assert search_while_down.json()["error"]["code"] == "retrieval_unavailable"

    assert found_before["hits"] == []
    assert succeeded["status"] == "succeeded" and succeeded["errors"] == []
    assert succeeded["filesDone"] == 2 and succeeded["chunksEmbedded"] == 2
    assert sorted(document["source"] for document in stored) == ["garden.md", "notes.txt"]
    assert found["hits"][0]["source"] == "notes.txt"
