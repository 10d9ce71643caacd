"""The Ollama embedder against OllamaDouble (a TEST DOUBLE: no Ollama server runs here) and,
when OLLAMA_URL and OLLAMA_EMBED_MODEL are set, against a real Ollama server."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from agent_server.backends.resilience import CircuitBreaker, ResilientHTTP, RetryPolicy, Timeouts
from agent_server.config import Settings
from agent_server.knowledge.embedders import create_embedder
from agent_server.knowledge.embedders.http import OLLAMA, HTTPEmbedder
from agent_server.knowledge.embedders.registry import known_dimensions
from agent_server.knowledge.errors import RetrievalUnavailable
from tests.doubles.ollama import OllamaDouble

EMBED_MODEL = "nomic-embed-text:latest"


def ollama_embedder(url: str, model: str = EMBED_MODEL, batch_size: int = 64) -> HTTPEmbedder:
    http = ResilientHTTP(
        f"ollama at {url}",
        timeouts=Timeouts(connect=1, first_byte=5),
        retry=RetryPolicy(attempts=2, base_delay=0.01, jitter=0),
        breaker=CircuitBreaker(),
    )
    return HTTPEmbedder(OLLAMA, url, model, http, batch_size)


@pytest.mark.parametrize(
    ("model", "dimensions"),
    [
        ("nomic-embed-text", 768),
        ("nomic-embed-text:latest", 768),
        ("nomic-ai/nomic-embed-text-v1.5", 768),
        ("mxbai-embed-large:335m", 1024),
        ("bge-m3", 1024),
        ("all-minilm:l6-v2", 384),
        ("my-own-model", None),
    ],
)
def test_known_models_are_routed_by_name(model, dimensions):
    assert known_dimensions(model) == dimensions


async def test_texts_are_sent_in_batches_and_come_back_in_order_as_unit_vectors():
    async with OllamaDouble(models=[EMBED_MODEL]) as ollama:
        embedder = ollama_embedder(ollama.url, batch_size=2)
        texts = ["alpha", "beta", "gamma", "delta", "alpha"]
        vectors = await embedder.embed(texts)
        single = await embedder.embed(["gamma"])
        await embedder.aclose()
    assert [r["input"] for r in ollama.embed_requests[:3]] == [
        ["alpha", "beta"],
        ["gamma", "delta"],
        ["alpha"],
    ]
    assert ollama.embed_requests[0]["model"] == EMBED_MODEL
    assert ollama.embed_requests[0]["truncate"] is True
    assert vectors.dtype == np.float32 and vectors.shape == (5, 768)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(vectors[0], vectors[4])  # same text, same vector
    np.testing.assert_array_equal(vectors[2], single[0])  # order kept across batches
    assert embedder.dimensions == 768  # from the registry, before any request


async def test_an_unknown_model_learns_its_dimensions_from_check():
    async with OllamaDouble(models=["house-embedder"], embed_dimensions=96) as ollama:
        embedder = ollama_embedder(ollama.url, "house-embedder")
        with pytest.raises(RuntimeError, match="unknown until check"):
            _ = embedder.dimensions
        await embedder.check()
        assert embedder.dimensions == 96
        assert (await embedder.embed([])).shape == (0, 96)
        await embedder.aclose()


async def test_a_missing_model_is_a_clear_retrieval_error():
    async with OllamaDouble(models=["other"]) as ollama:
        embedder = ollama_embedder(ollama.url)
        with pytest.raises(RetrievalUnavailable, match="not found") as caught:
            await embedder.embed(["x"])
        await embedder.aclose()
    assert caught.value.code == "retrieval_unavailable"


async def test_a_failing_server_is_retried_then_reported():
    async with OllamaDouble(models=[EMBED_MODEL]) as ollama:
        ollama.embed_status = 503
        embedder = ollama_embedder(ollama.url)
        with pytest.raises(RetrievalUnavailable, match="HTTP 503"):
            await embedder.embed(["x"])
        await embedder.aclose()
    assert len(ollama.embed_requests) == 2  # the first try and one retry


async def test_a_server_that_is_down_fails_fast(unused_tcp_port):
    embedder = ollama_embedder(f"http://127.0.0.1:{unused_tcp_port}")
    started = time.monotonic()
    with pytest.raises(RetrievalUnavailable, match="cannot connect"):
        await embedder.embed(["x"])
    await embedder.aclose()
    assert time.monotonic() - started < 5


async def test_settings_select_the_remote_embedder():
    async with OllamaDouble(models=[EMBED_MODEL]) as ollama:
        settings = Settings(embedder="ollama", embed_url=ollama.url, embed_model=EMBED_MODEL)
        embedder = create_embedder(settings)
        vectors = await embedder.embed(["hello"])
        await embedder.aclose()
    assert (embedder.provider, embedder.model, vectors.shape) == ("ollama", EMBED_MODEL, (1, 768))
    assert Settings(embedder="openai").problems() == [
        "CITADEL_EMBEDDER=openai needs CITADEL_EMBED_URL and CITADEL_EMBED_MODEL"
    ]


@pytest.mark.opt_in
@pytest.mark.skipif(
    not (os.environ.get("OLLAMA_URL") and os.environ.get("OLLAMA_EMBED_MODEL")),
    reason="set OLLAMA_URL and OLLAMA_EMBED_MODEL to test against a real Ollama server",
)
async def test_a_real_ollama_server_embeds_by_meaning():
    embedder = ollama_embedder(os.environ["OLLAMA_URL"], os.environ["OLLAMA_EMBED_MODEL"])
    await embedder.check()
    cat, kitten, invoice = await embedder.embed(
        ["A cat sleeps on the sofa.", "A kitten naps on the couch.", "Pay the invoice by Friday."]
    )
    await embedder.aclose()
    assert float(cat @ kitten) > float(cat @ invoice)
