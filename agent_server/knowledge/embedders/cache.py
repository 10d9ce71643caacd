"""An exact-text embedding cache in front of any embedder: in process, and in Redis when
configured, so every worker shares what one computed.

Keys name the provider, the model and the SHA-256 of the text; values are the raw float32
bytes of the unit vector. Lookups go memory, then Redis (one MGET for the whole call), then
the embedder (once per distinct text). Redis is an optimisation, never a dependency: when it
fails or is slow, the cache says so in the log and goes on without it for ``retry_after``
seconds.
"""

from __future__ import annotations

import collections
import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import redis.asyncio as redis
import redis.exceptions

from agent_server.knowledge.embedders.base import Embedder, Vectors

logger = logging.getLogger(__name__)


@dataclass
class CacheStats:
    memory_hits: int = 0
    redis_hits: int = 0
    misses: int = 0  # texts the embedder had to embed
    redis_errors: int = 0


class CachedEmbedder:
    """Looks like ``inner``; answers what it has seen before without asking it."""

    def __init__(
        self,
        inner: Embedder,
        *,
        memory_entries: int = 10_000,
        redis_client: redis.Redis | None = None,
        ttl: float = 30 * 24 * 3600.0,
        retry_after: float = 30.0,
    ) -> None:
        self.inner = inner
        self.stats = CacheStats()
        self._memory: collections.OrderedDict[bytes, bytes] = collections.OrderedDict()
        self._memory_entries = memory_entries
        self._redis = redis_client
        self._ttl = round(ttl)
        self._retry_after = retry_after
        self._redis_down_until = 0.0
        self._prefix = f"emb:{inner.provider}:{inner.model}:".encode()

    @property
    def provider(self) -> str:
        return self.inner.provider

    @property
    def model(self) -> str:
        return self.inner.model

    @property
    def dimensions(self) -> int:
        return self.inner.dimensions

    async def embed(self, texts: Sequence[str]) -> Vectors:
        keys = [self._prefix + hashlib.sha256(text.encode()).hexdigest().encode() for text in texts]
        found: dict[bytes, bytes] = {}
        for key in dict.fromkeys(keys):
            value = self._memory.get(key)
            if value is not None:
                self._memory.move_to_end(key)
                found[key] = value
        self.stats.memory_hits += sum(key in found for key in keys)
        missing = [key for key in dict.fromkeys(keys) if key not in found]
        if missing:
            from_redis = await self._redis_get(missing)
            self.stats.redis_hits += sum(key in from_redis for key in keys)
            found.update(from_redis)
            self._remember(from_redis)
        todo = {key: text for key, text in zip(keys, texts, strict=True) if key not in found}
        if todo:
            vectors = await self.inner.embed(list(todo.values()))
            computed = {key: vector.tobytes() for key, vector in zip(todo, vectors, strict=True)}
            self.stats.misses += sum(key in computed for key in keys)
            found.update(computed)
            self._remember(computed)
            await self._redis_set(computed)
        if not keys:
            return np.zeros((0, self.inner.dimensions), dtype=np.float32)
        return np.frombuffer(b"".join(found[key] for key in keys), dtype=np.float32).reshape(
            len(keys), -1
        )

    async def check(self) -> None:
        await self.inner.check()

    async def aclose(self) -> None:
        await self.inner.aclose()

    def _remember(self, entries: dict[bytes, bytes]) -> None:
        if not self._memory_entries:
            return
        self._memory.update(entries)
        while len(self._memory) > self._memory_entries:
            self._memory.popitem(last=False)

    async def _redis_get(self, keys: list[bytes]) -> dict[bytes, bytes]:
        if not self._usable():
            return {}
        try:
            values = await self._redis.mget(keys)  # type: ignore[union-attr]
        except (redis.exceptions.RedisError, OSError) as error:
            self._redis_failed(error)
            return {}
        return {key: value for key, value in zip(keys, values, strict=True) if value is not None}

    async def _redis_set(self, entries: dict[bytes, bytes]) -> None:
        if not self._usable() or not entries:
            return
        try:
            async with self._redis.pipeline(transaction=False) as pipe:  # type: ignore[union-attr]
                for key, value in entries.items():
                    pipe.set(key, value, ex=self._ttl)
                await pipe.execute()
        except (redis.exceptions.RedisError, OSError) as error:
            self._redis_failed(error)

    def _usable(self) -> bool:
        return self._redis is not None and time.monotonic() >= self._redis_down_until

    def _redis_failed(self, error: BaseException) -> None:
        self.stats.redis_errors += 1
        self._redis_down_until = time.monotonic() + self._retry_after
        logger.warning(
            "embedding cache: Redis failed (%s); in-process cache only for %.0f s",
            error,
            self._retry_after,
        )
