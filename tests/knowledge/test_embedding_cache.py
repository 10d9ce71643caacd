"""The embedding cache in front of the Ollama embedder (OllamaDouble, a TEST DOUBLE, counts the
texts that reach the model), in process and in the real Redis at 127.0.0.1:6379."""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import AsyncIterator

import numpy as np
import pytest
import redis.asyncio as redis

from agent_server.knowledge.embedders.cache import CachedEmbedder
from tests.doubles.ollama import OllamaDouble
from tests.knowledge.test_http_embedders import EMBED_MODEL, ollama_embedder
from tests.support.redis import SHARED_DB, redis_url

REDIS_URL = redis_url(SHARED_DB)


def embedded_texts(ollama: OllamaDouble) -> list[str]:
    return [text for request in ollama.embed_requests for text in request["input"]]


@pytest.fixture
async def ollama() -> AsyncIterator[OllamaDouble]:
    async with OllamaDouble(models=[EMBED_MODEL]) as double:
        yield double


@pytest.fixture
async def redis_client() -> AsyncIterator[redis.Redis]:
    client = redis.from_url(REDIS_URL, socket_timeout=1, socket_connect_timeout=1)
    yield client
    await client.aclose()


def words(count: int) -> list[str]:
    """Texts no other test (or earlier run) has cached."""
    return [f"text {uuid.uuid4().hex}" for _ in range(count)]


async def test_each_distinct_text_reaches_the_model_once(ollama):
    a, b, c = words(3)
    cached = CachedEmbedder(ollama_embedder(ollama.url))
    first = await cached.embed([a, b, a])
    second = await cached.embed([b, c, b])
    assert embedded_texts(ollama) == [a, b, c]
    np.testing.assert_array_equal(first[1], second[0])
    np.testing.assert_array_equal(first[0], first[2])
    uncached = await ollama_embedder(ollama.url).embed([c])
    np.testing.assert_array_equal(second[1], uncached[0])  # the cache returns what it was given
    assert (cached.stats.memory_hits, cached.stats.misses) == (2, 4)
    assert second.shape == (3, 768) and second.dtype == np.float32


async def test_the_memory_cache_forgets_the_least_recently_used(ollama):
    a, b, c = words(3)
    cached = CachedEmbedder(ollama_embedder(ollama.url), memory_entries=2)
    await cached.embed([a, b])
    await cached.embed([a])  # a is now the most recent
    await cached.embed([c])  # evicts b
    await cached.embed([a, b])
    assert embedded_texts(ollama) == [a, b, c, b]


async def test_workers_share_embeddings_through_redis(ollama, redis_client):
    texts = words(50)
    one = CachedEmbedder(ollama_embedder(ollama.url), redis_client=redis_client, ttl=60)
    other = CachedEmbedder(ollama_embedder(ollama.url), redis_client=redis_client, ttl=60)
    computed = await one.embed(texts)
    shared = await other.embed(texts)
    assert embedded_texts(ollama) == texts  # the second worker asked the model nothing
    np.testing.assert_array_equal(computed, shared)
    assert other.stats.redis_hits == 50 and other.stats.misses == 0
    ttl = await redis_client.ttl(b"emb:ollama:" + EMBED_MODEL.encode() + b":" + _hash(texts[0]))
    assert 0 < ttl <= 60


async def test_redis_down_degrades_to_the_memory_cache(ollama, unused_tcp_port):
    down = redis.from_url(
        f"redis://127.0.0.1:{unused_tcp_port}/0", socket_timeout=0.5, socket_connect_timeout=0.5
    )
    a, b = words(2)
    cached = CachedEmbedder(ollama_embedder(ollama.url), redis_client=down, retry_after=60)
    started = time.monotonic()
    await cached.embed([a])
    await cached.embed([a, b])
    elapsed = time.monotonic() - started
    await down.aclose()
    assert embedded_texts(ollama) == [a, b]
    assert cached.stats.redis_errors == 1  # then Redis is left alone for retry_after
    assert elapsed < 3


def _hash(text: str) -> bytes:
    return hashlib.sha256(text.encode()).hexdigest().encode()
