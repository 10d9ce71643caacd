"""``POST /v1/embeddings`` through the official ``openai`` Python SDK and through Citadel's own
OpenAI-dialect embedder; the embedder behind it is the Ollama embedder on OllamaDouble (a TEST
DOUBLE: no Ollama server runs here)."""

from __future__ import annotations

import httpx
import numpy as np
import openai
import pytest

from agent_server.backends.resilience import CircuitBreaker, ResilientHTTP, RetryPolicy, Timeouts
from agent_server.knowledge.embedders.http import OPENAI, HTTPEmbedder
from agent_server.knowledge.errors import RetrievalUnavailable
from tests.conftest import citadel, double_model
from tests.doubles.ollama import DEFAULT_MODEL, OllamaDouble

EMBED_MODEL = "nomic-embed-text"


def embedding_settings(ollama: OllamaDouble) -> dict:
    return {
        "store": "memory",
        "embedder": "ollama",
        "embed_url": ollama.url,
        "embed_model": EMBED_MODEL,
    }


@pytest.fixture
async def ollama():
    async with OllamaDouble(models=[DEFAULT_MODEL, EMBED_MODEL]) as double:
        yield double


async def test_the_openai_sdk_embeds_through_citadel(ollama):
    async with citadel(double_model(ollama), **embedding_settings(ollama)) as url:
        client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        floats = await client.embeddings.create(
            model=EMBED_MODEL, input=["first text", "second text"], encoding_format="float"
        )
        default = await client.embeddings.create(model=f"{EMBED_MODEL}:latest", input="first text")
        await client.close()
    assert [item.index for item in floats.data] == [0, 1]
    assert floats.model == EMBED_MODEL and floats.usage.prompt_tokens == 4
    first = np.array(floats.data[0].embedding, dtype=np.float32)
    assert first.shape == (768,) and abs(float(np.linalg.norm(first)) - 1) < 1e-5
    # The SDK asks for base64 unless told otherwise, and decodes it to the same floats.
    np.testing.assert_allclose(default.data[0].embedding, first, rtol=1e-6)


async def test_the_openai_dialect_embedder_talks_to_citadel(ollama):
    async with citadel(double_model(ollama), **embedding_settings(ollama)) as url:
        http = ResilientHTTP(
            "citadel",
            timeouts=Timeouts(connect=2, first_byte=10),
            retry=RetryPolicy(attempts=1),
            breaker=CircuitBreaker(),
        )
        embedder = HTTPEmbedder(OPENAI, f"{url}/v1", EMBED_MODEL, http, batch_size=3)
        vectors = await embedder.embed([f"text {n}" for n in range(7)])
        await embedder.aclose()
    assert vectors.shape == (7, 768)
    assert [len(request["input"]) for request in ollama.embed_requests] == [3, 3, 1]


@pytest.mark.parametrize(
    ("body", "status", "code", "fragment"),
    [
        ({"model": EMBED_MODEL}, 422, "invalid_input", "input"),
        ({"model": EMBED_MODEL, "input": []}, 422, "invalid_input", "input"),
        ({"model": EMBED_MODEL, "input": [[1, 2, 3]]}, 422, "invalid_input", "token ids"),
        ({"model": "text-embedding-3-small", "input": "x"}, 404, "model_not_found", EMBED_MODEL),
        ({"model": EMBED_MODEL, "input": "x", "dimensions": 12}, 422, "invalid_input", "768"),
        ({"model": EMBED_MODEL, "input": ["x"] * 2049}, 422, "invalid_input", "2048"),
    ],
)
async def test_bad_embedding_requests_are_refused_clearly(ollama, body, status, code, fragment):
    settings = embedding_settings(ollama)
    async with citadel(double_model(ollama), **settings) as url, httpx.AsyncClient() as client:
        response = await client.post(f"{url}/v1/embeddings", json=body)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == code and fragment in error["message"], error
    assert ollama.embed_requests == []


async def test_an_embedder_that_is_down_is_a_503(ollama, unused_tcp_port):
    settings = {**embedding_settings(ollama), "embed_url": f"http://127.0.0.1:{unused_tcp_port}"}
    async with citadel(double_model(ollama), **settings) as url, httpx.AsyncClient() as client:
        response = await client.post(
            f"{url}/v1/embeddings", json={"model": EMBED_MODEL, "input": "x"}
        )
    assert response.status_code == 503
    assert response.json()["error"]["code"] == RetrievalUnavailable.code
    assert "cannot connect" in response.json()["error"]["message"]
